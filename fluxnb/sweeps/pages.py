""":class:`Sheet`: a rendered sweep picture and the parameters saved with it, as a PNG (text
chunks) or a PDF (one page per z value of a 3-axis contact sheet, via matplotlib's PdfPages).

>>> from matplotlib.figure import Figure
>>> sheet = Sheet(Figure(figsize=(1, 1)), {"title": "t", "axes": {"steps": [4, 8]}})
>>> sheet.png_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n", sheet.pdf_bytes()[:5]
(True, b'%PDF-')
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["Sheet"]


class Sheet:
    """A rendered figure plus the metadata saved with it; ``pages`` (when given) builds the PDF's
    pages (one figure each), else the PDF has the figure as its one page."""

    def __init__(self, figure: Figure, metadata: Mapping[str, Any],
                 pages: Callable[[], list[Figure]] | None = None):
        self.figure = figure
        self.metadata = dict(metadata)
        self._pages = pages

    def __repr__(self) -> str:
        return f"Sheet({self.metadata.get('title', '')!r})"

    def _parameters(self) -> str:
        line = "; ".join(f"{k}={v}" for k, v in self.metadata.get("axes", {}).items())
        return f"axes: {line}; base: {json.dumps(self.metadata.get('base', {}))}"

    def png_bytes(self, dpi: int = 100) -> bytes:
        """The figure as PNG bytes with the metadata in text chunks."""
        text = {
            "Software": "fluxnb",
            "Title": str(self.metadata.get("title", "fluxnb sweep")),
            "parameters": self._parameters(),
            "fluxnb-sweep": json.dumps(self.metadata, default=str, ensure_ascii=True),
        }
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi, metadata=text)
        return buffer.getvalue()

    def pdf_bytes(self, dpi: int = 100) -> bytes:
        """A PDF: one page per z value (or the figure as one page); the sweep's parameters in
        the document's Subject (readable) and Keywords (the ``fluxnb-sweep`` JSON)."""
        from matplotlib.backends.backend_pdf import PdfPages

        buffer = io.BytesIO()
        info = {"Title": str(self.metadata.get("title", "fluxnb sweep")), "Creator": "fluxnb",
                "Subject": self._parameters(),
                "Keywords": json.dumps(self.metadata, default=str, ensure_ascii=True)}
        with PdfPages(buffer, metadata=info) as pdf:
            for page in (self._pages() if self._pages is not None else [self.figure]):
                pdf.savefig(page, dpi=dpi)
        return buffer.getvalue()

    def save(self, path: str | os.PathLike[str], dpi: int = 100) -> Path:
        """Write the picture; returns the path. ``.pdf``: one page per z value; anything else:
        the PNG (with the sweep's parameters in its text chunks).

        >>> sweep.contact_sheet(x="steps").save("sheet.png")          # doctest: +SKIP
        >>> sweep.contact_sheet(x="steps", y="strength", z="seed").save("sweep.pdf")  # doctest: +SKIP
        """
        target = Path(path)
        pdf = target.suffix.lower() == ".pdf"
        target.write_bytes(self.pdf_bytes(dpi=dpi) if pdf else self.png_bytes(dpi=dpi))
        return target

    def _repr_png_(self) -> bytes:
        return self.png_bytes(dpi=72)
