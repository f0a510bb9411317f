"""Loaders: files → SourceDocuments, one format per function.

A file is the unit of failure: a loader parses a whole file before yielding any of its
documents, so a file that fails (binary, undecodable, malformed line without
--skip-bad) contributes nothing, and every problem is reported as `path[:line]: why`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FORMATS = ("auto", "text", "markdown", "html", "pdf", "jsonl", "csv", "beir")
EXTENSIONS = {
    ".txt": "text", ".text": "text", ".rst": "text", ".log": "text",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv", ".tsv": "csv",
}
MIME_TYPES = {
    "text": "text/plain", "markdown": "text/markdown", "html": "text/html", "pdf": "application/pdf",
    "jsonl": "application/jsonl", "csv": "text/csv", "beir": "application/jsonl",
}
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


class LoadError(Exception):
    """A file (or one line of it) cannot be loaded; the message names it."""


@dataclasses.dataclass
class SourceDocument:
    external_id: str
    text: str
    title: str | None = None
    uri: str | None = None
    mime_type: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """Content hash: equal hash ⇒ re-ingesting writes nothing."""
        canonical = json.dumps([self.title or "", self.text, self.metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclasses.dataclass
class LoadOptions:
    format: str = "auto"
    text_field: str | None = None  # JSONL/CSV: default the first of text, contents, body
    id_field: str | None = None  # default the first of _id, id, doc_id; else file#line
    title_field: str | None = None  # default title
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)  # added to every document
    max_bytes: int = DEFAULT_MAX_BYTES
    skip_bad: bool = False  # skip malformed JSONL/CSV records instead of failing the file
    follow_symlinks: bool = False  # follow links that lead outside the folder being walked


@dataclasses.dataclass
class LoadedFile:
    path: Path
    documents: list[SourceDocument]
    skipped_lines: list[str]  # 'path:line: why' for records skipped under --skip-bad


def detect_format(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return EXTENSIONS.get(Path(name).suffix)


def is_beir_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


def _walk(root: Path, follow_symlinks: bool, skipped: list[str]) -> Iterator[Path]:
    """Files under root, sorted; a symbolic link leading outside root is skipped (and said so)
    unless follow_symlinks: a link planted in a shared folder must not pull in ~/.ssh/id_rsa."""
    base = root.resolve()
    for child in sorted(root.rglob("*")):
        if any(p.startswith(".") for p in child.relative_to(root).parts):
            continue
        if not follow_symlinks and (child.is_symlink() or child.resolve() != base / child.relative_to(root)):
            target = child.resolve()
            if target != base and base not in target.parents:
                skipped.append(f"{child}: a symbolic link out of {root}, skipped (ingest with --follow-symlinks to read it)")
                continue
        if child.is_file():
            yield child


def discover(paths: list[Path], fmt: str, *, follow_symlinks: bool = False,
             skipped: list[str] | None = None) -> Iterator[tuple[Path, str]]:
    """(file, format) pairs: directories walked recursively in sorted order, hidden files skipped.

    A BEIR folder (with corpus.jsonl) counts as one source: its corpus only, never its
    queries or qrels. Files of unknown type inside directories are left out silently;
    named explicitly, they are read as text. Links out of a walked folder go to `skipped`.
    """
    skipped = skipped if skipped is not None else []
    for path in paths:
        if fmt == "beir" or (fmt == "auto" and is_beir_dir(path)):
            if path.is_dir():
                corpus = next((path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file()), None)
                if corpus is None:
                    raise LoadError(f"{path}: not a BEIR folder (no corpus.jsonl or corpus.jsonl.gz)")
                yield corpus, "beir"
            else:
                yield path, "beir"
        elif path.is_dir():
            for child in _walk(path, follow_symlinks, skipped):
                child_fmt = fmt if fmt != "auto" else detect_format(child)
                if child_fmt:
                    yield child, child_fmt
        else:
            yield path, (fmt if fmt != "auto" else detect_format(path) or "text")


def load_file(path: Path, fmt: str, options: LoadOptions) -> LoadedFile:
    """Parse one file completely; raise LoadError (one line) if it cannot be used."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size > options.max_bytes:
        raise LoadError(
            f"{path}: {size / 1e6:.1f} MB is over the {options.max_bytes / 1e6:.1f} MB limit (raise it with --max-bytes)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise LoadError(f"{path}: not a valid gzip file ({exc})") from None
    loader = _LOADERS[fmt]
    skipped: list[str] = []
    docs = loader(path, raw, options, skipped)
    for doc in docs:
        doc.metadata = {**doc.metadata, **options.metadata}
        doc.mime_type = doc.mime_type or MIME_TYPES[fmt]
    return LoadedFile(path, docs, skipped)


# --------------------------------------------------------------------------- helpers


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:8192]:
        raise LoadError(f"{path}: binary file, not text (PDFs need --format pdf or a .pdf name)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); convert it to UTF-8"
        ) from None


def _file_doc(path: Path, text: str, title: str | None, **metadata: Any) -> SourceDocument:
    resolved = path.resolve()
    return SourceDocument(
        external_id=str(resolved),
        text=text,
        title=title,
        uri=resolved.as_uri(),
        metadata={"source": path.name, **metadata},
    )


def _normalise_space(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --------------------------------------------------------------------------- one loader per format


def load_text(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    text = _normalise_space(_decode(path, raw))
    return [_file_doc(path, text, path.stem)]


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_HEADING = re.compile(r"\A\s*#\s+(.+?)\s*#*\s*(?:\n|\Z)")


def load_markdown(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    text = _FRONT_MATTER.sub("", _decode(path, raw).replace("\r\n", "\n"))
    heading = _HEADING.match(text)  # a leading '# Title' line is the title
    if heading:
        title, text = heading.group(1).strip(), text[heading.end():]  # indexed and embedded once, as the title
    else:
        title = path.stem
    return [_file_doc(path, _normalise_space(text), title)]


_BOILERPLATE = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg", "iframe", "template", "button")
_BLOCKS = {"p", "div", "section", "article", "main", "li", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
           "pre", "blockquote", "br", "dd", "dt", "figcaption", "td", "th"}


def load_html(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    import lxml.html

    text = _decode(path, raw)
    if not text.strip():
        return [_file_doc(path, "", path.stem)]
    try:
        root = lxml.html.document_fromstring(text)
    except Exception as exc:  # lxml raises several types for hopeless markup
        raise LoadError(f"{path}: cannot parse HTML ({exc})") from None
    title_el = root.find(".//title")
    h1 = root.find(".//h1")
    title = (title_el.text_content().strip() if title_el is not None else "") or (
        h1.text_content().strip() if h1 is not None else ""
    ) or path.stem
    for el in root.xpath("//" + " | //".join(_BOILERPLATE)):
        el.drop_tree()
    for el in root.xpath("//*[@role='navigation' or @role='banner' or @role='contentinfo' or @aria-hidden='true']"):
        el.drop_tree()
    # The main content when the page marks it; otherwise the body.
    # (lxml elements are falsy when childless: compare with None, never `or`.)
    body = next(iter(root.xpath("//main | //article | //*[@role='main']")), None)
    if body is None:
        body = root.find(".//body")
    if body is None:
        body = root
    parts: list[str] = []
    for el in body.iter():
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _BLOCKS:
            parts.append("\n\n")
        if el.text and tag not in ("html",):
            parts.append(el.text)
        if el is not body and el.tail:
            parts.append(el.tail)
    return [_file_doc(path, _normalise_space("".join(parts)), title)]


def load_pdf(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"{path}: not a readable PDF ({exc})") from None
    title = (info.title if info and info.title else None) or path.stem
    text = "\n\n".join(_normalise_space(p) for p in pages if p.strip())
    return [_file_doc(path, text, str(title), pages=len(pages))]


def _pick(record: dict, explicit: str | None, defaults: tuple[str, ...]) -> str | None:
    if explicit:
        return explicit
    return next((f for f in defaults if f in record), None)


def _record_doc(path: Path, where: str, record: Any, options: LoadOptions, *, beir: bool) -> SourceDocument:
    if not isinstance(record, dict):
        raise LoadError(f"{where}: expected a JSON object, got {type(record).__name__}")
    text_field = "text" if beir else _pick(record, options.text_field, ("text", "contents", "body", "content"))
    id_field = "_id" if beir else _pick(record, options.id_field, ("_id", "id", "doc_id", "docid"))
    title_field = "title" if beir else _pick(record, options.title_field, ("title",))
    if text_field is None or text_field not in record:
        raise LoadError(f"{where}: no text field (tried {options.text_field or 'text, contents, body, content'}; set --text-field)")
    if id_field is not None and id_field not in record:
        raise LoadError(f"{where}: no id field {id_field!r}")
    text = record[text_field]
    text = "" if text is None else str(text)
    external_id = str(record[id_field]) if id_field else where
    title = record.get(title_field) if title_field else None
    used = {text_field, id_field, title_field}
    metadata = {
        key: value for key, value in record.items()
        if key not in used and isinstance(value, (str, int, float, bool)) and key != "metadata"
    }
    if isinstance(record.get("metadata"), dict):
        metadata.update(record["metadata"])
    return SourceDocument(
        external_id=external_id,
        text=_normalise_space(text),
        title=str(title).strip() or None if title else None,
        uri=path.resolve().as_uri(),
        metadata=metadata,
    )


def _load_jsonl(path: Path, raw: bytes, options: LoadOptions, skipped: list[str], *, beir: bool) -> list[SourceDocument]:
    text = _decode(path, raw)
    docs: list[SourceDocument] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            docs.append(_record_doc(path, where, json.loads(line), options, beir=beir))
        except json.JSONDecodeError as exc:
            message = f"{where}: invalid JSON ({exc.msg} at column {exc.colno})"
            if not options.skip_bad:
                raise LoadError(message + "; pass --skip-bad to skip bad lines") from None
            skipped.append(message)
        except LoadError as exc:
            if not options.skip_bad:
                raise LoadError(f"{exc}; pass --skip-bad to skip bad lines") from None
            skipped.append(str(exc))
    return docs


def load_jsonl(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    return _load_jsonl(path, raw, options, skipped, beir=False)


def load_beir(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    return _load_jsonl(path, raw, options, skipped, beir=True)


def load_csv(path: Path, raw: bytes, options: LoadOptions, skipped: list[str]) -> list[SourceDocument]:
    text = _decode(path, raw)
    delimiter = "\t" if path.name.lower().rstrip(".gz").endswith(".tsv") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    docs = []
    try:
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            where = f"{path}:{number}"
            if None in row:  # more cells than header fields
                message = f"{where}: {len(row[None]) + len(reader.fieldnames or [])} cells for {len(reader.fieldnames or [])} columns"
                if not options.skip_bad:
                    raise LoadError(message + "; pass --skip-bad to skip bad rows")
                skipped.append(message)
                continue
            try:
                docs.append(_record_doc(path, where, dict(row), options, beir=False))
            except LoadError as exc:
                if not options.skip_bad:
                    raise LoadError(f"{exc}; pass --skip-bad to skip bad rows") from None
                skipped.append(str(exc))
    except csv.Error as exc:
        raise LoadError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return docs


_LOADERS = {
    "text": load_text,
    "markdown": load_markdown,
    "html": load_html,
    "pdf": load_pdf,
    "jsonl": load_jsonl,
    "csv": load_csv,
    "beir": load_beir,
}
