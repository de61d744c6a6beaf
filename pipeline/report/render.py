"""The report's blocks rendered as markdown (report.md, the Prefect artifact) and as HTML."""

from __future__ import annotations

import base64
import html
from pathlib import Path

Block = tuple  # ("h1"|"h2"|"p"|"list"|"table"|"img", ...)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def to_markdown(blocks: list[Block], root: Path, embed_images: bool = False) -> str:
    """Markdown of ``blocks``; images as paths relative to ``root``, or embedded as data URIs
    (what a viewer that cannot fetch files beside the report, such as Prefect's UI, shows)."""
    out: list[str] = []
    for kind, *rest in blocks:
        if kind == "h1":
            out.append(f"# {rest[0]}\n")
        elif kind == "h2":
            out.append(f"## {rest[0]}\n")
        elif kind == "p":
            out.append(f"{rest[0]}\n")
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]) + "\n")
        elif kind == "img":
            path = Path(rest[1])
            rel = path.relative_to(root) if path.is_relative_to(root) else path
            if embed_images and path.is_file():
                out.append(f"![{rest[0]}]({png_data_uri(path)})\n")
            else:
                out.append(f"![{rest[0]}]({rel})\n")
        elif kind == "table":
            header, rows = rest
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    esc = html.escape
    body: list[str] = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{esc(str(rest[0])).replace('`', '')}</{kind}>")
        elif kind == "list":
            items = "".join(f"<li>{esc(item).replace('`', '')}</li>" for item in rest[0])
            body.append(f"<ul>{items.replace('**', '')}</ul>")
        elif kind == "img":
            path = Path(rest[1])
            if path.is_file():
                body.append(f'<img alt="{esc(rest[0])}" src="{png_data_uri(path)}">')
        elif kind == "table":
            header, rows = rest
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            cells = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
