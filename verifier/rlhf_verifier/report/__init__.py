"""Reports: terminal text, JSON and a self-contained HTML page."""

from .html import render_html
from .text import render_json, render_text

__all__ = ["render_html", "render_json", "render_text"]
