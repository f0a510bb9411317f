"""Loaders: files → SourceDocuments, one format per function.

A file is the unit of failure: a loader parses a whole file before yielding any of its
documents, so a file that fails (undecodable, malformed line without --skip-bad) contributes
nothing, and every problem is reported with its path and a short reason (`LoadError.reason`),
which the ingest report counts: nothing is dropped silently.

What is read: by extension when there is a known one, else by content (`sniff`): extensionless
README/COPYING/changelog files are text, `%PDF` is a PDF, a zip with `word/document.xml` is a
.docx, one with an EPUB mimetype an .epub, a gzip stream is opened and its content sniffed
again; anything else that is not text is reported as binary. Text that is not UTF-8 is decoded
by detection (charset-normalizer) and the encoding recorded in the document's metadata; HTML is
decoded from its bytes with the charset it declares.

Large plain-text files (over `STREAM_BYTES`) are not read whole: their document carries a
`stream` of text segments that the pipeline chunks, embeds and writes in bounded batches.
"""

from __future__ import annotations

import bisect
import codecs
import csv
import dataclasses
import fnmatch
import gzip
import hashlib
import io
import json
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FORMATS = ("auto", "text", "markdown", "html", "pdf", "docx", "epub", "jsonl", "csv", "beir")
EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".log": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".epub": "epub",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
}
MIME_TYPES = {
    "text": "text/plain",
    "markdown": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "epub": "application/epub+zip",
    "jsonl": "application/jsonl",
    "csv": "text/csv",
    "beir": "application/jsonl",
}
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
STREAM_BYTES = 4 * 1024 * 1024  # plain text above this is streamed in segments, never held whole
SEGMENT_CHARS = 1 << 20  # characters per streamed segment (cut at a paragraph, line or space)
_SNIFF_BYTES = 8192


class LoadError(Exception):
    """A file (or one line of it) cannot be loaded; the message names it, `reason` classifies it.

    `status` is 'failed' (something is wrong with the file) or 'skipped' (it is deliberately
    not ingested: binary, empty).
    """

    def __init__(self, message: str, reason: str = "unparseable", status: str = "failed"):
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclasses.dataclass
class SourceDocument:
    external_id: str
    text: str
    title: str | None = None
    uri: str | None = None
    mime_type: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    # A large document: text is "" and `stream()` yields its text in segments; `content_sha256`
    # is the hash of its file's bytes (hashing the text would mean holding it).
    stream: Callable[[], Iterator[str]] | None = None
    content_sha256: str | None = None
    size: int = 0  # bytes of source it came from (progress and batch sizing)
    # Where things are in `text`, for citations: (offset, page number) where each PDF page
    # starts, and (offset, heading path) where each markdown/HTML/docx section starts.
    pages: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    headings: list[tuple[int, list[str]]] = dataclasses.field(default_factory=list)

    @property
    def sha256(self) -> str:
        """Content hash: equal hash ⇒ re-ingesting writes nothing.

        The path keys (PATH_KEYS) are left out: they say where the file sits, which the external
        id already pins, and a store ingested before they existed must not re-embed every file."""
        body = self.text if self.content_sha256 is None else f"sha256:{self.content_sha256}"
        metadata = {k: v for k, v in self.metadata.items() if k not in PATH_KEYS}
        canonical = json.dumps([self.title or "", body, metadata], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Metadata every file's documents get from where the file sits under the folder given to ingest:
# `path` (relative, with /), `folder` (its folder, "." at the top) and `ext` (lower case, no dot).
PATH_KEYS = ("path", "folder", "ext")


def path_metadata(path: Path, roots: list[Path]) -> dict[str, str]:
    """PATH_KEYS for a file found under one of `roots` (a file given itself: its name)."""
    relative = Path(path.name)
    for root in roots:
        try:
            candidate = Path(os.path.relpath(path, root))
        except ValueError:  # another drive (Windows)
            continue
        if candidate.parts and candidate.parts[0] not in ("..", "."):  # under this folder
            relative = candidate
            break
    folder = relative.parent.as_posix()
    return {"path": relative.as_posix(), "folder": folder, "ext": path.suffix.lower().lstrip(".")}


def selected(relative_path: str, include: list[str], exclude: list[str]) -> bool:
    """--include/--exclude: shell globs matched against the relative path and the file name
    (`*` crosses folders: '*.js' drops a/b/jquery.js; 'vendor/*' drops everything under vendor/)."""
    name = relative_path.rsplit("/", 1)[-1]

    def matches(pattern: str) -> bool:
        return fnmatch.fnmatchcase(relative_path, pattern) or fnmatch.fnmatchcase(name, pattern)

    if include and not any(matches(p) for p in include):
        return False
    return not any(matches(p) for p in exclude)


@dataclasses.dataclass
class LoadOptions:
    format: str = "auto"
    text_field: str | None = None  # JSONL/CSV: default the first of text, contents, body
    id_field: str | None = None  # default the first of _id, id, doc_id; else file#line
    title_field: str | None = None  # default title
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)  # added to every document
    max_bytes: int = DEFAULT_MAX_BYTES  # on disk, and inflated (.gz, .docx, .epub)
    skip_bad: bool = False  # skip malformed JSONL/CSV records instead of failing the file
    follow_symlinks: bool = False  # follow links that lead outside the folder being walked
    include: list[str] = dataclasses.field(default_factory=list)  # globs: only files matching one (`selected`)
    exclude: list[str] = dataclasses.field(default_factory=list)  # globs: never files matching one


@dataclasses.dataclass
class Skipped:
    """Something not ingested, with why: a file, or one record of a file."""

    path: str
    reason: str
    detail: str
    status: str = "skipped"  # or 'failed'


@dataclasses.dataclass
class LoadedFile:
    path: Path
    documents: list[SourceDocument]
    skipped_lines: list[Skipped]  # records skipped under --skip-bad


@dataclasses.dataclass
class Source:
    """One discovered file: a format to load it with, or why it will not be loaded."""

    path: Path
    format: str | None
    size: int = 0
    problem: Skipped | None = None


def show(path: Path | str) -> str:
    """A path fit for a one-line message (a newline in a file name must not break the line)."""
    return str(path).encode("unicode_escape").decode("ascii") if any(c in str(path) for c in "\n\r\t") else str(path)


# --------------------------------------------------------------------------- discovery


def detect_format(path: Path) -> str | None:
    """The format a file's name says (a .gz counts by the name inside it), or None."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return EXTENSIONS.get(Path(name).suffix)


def is_beir_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


def _open(path: Path):
    """Every file read goes through here (one place to fail per file)."""
    return open(path, "rb")


def _read_head(path: Path, n: int = _SNIFF_BYTES) -> bytes:
    with _open(path) as f:
        head = f.read(n)
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path) as g:
                return g.read(n)
        except (OSError, EOFError, zlib.error):
            raise LoadError(f"{show(path)}: not a valid gzip file", reason="bad gzip") from None
    return head


def sniff(path: Path, head: bytes) -> str:
    """A format from content: pdf, docx, epub, html, text, or 'binary'."""
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        if b"mimetypeapplication/epub+zip" in head[:200]:
            return "epub"
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError):
            return "binary"
        if "word/document.xml" in names:
            return "docx"
        if "META-INF/container.xml" in names:
            return "epub"
        return "binary"
    if _bom_encoding(head) is None and _looks_binary(head):
        return "binary"
    lowered = head[:2048].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or (lowered.startswith(b"<?xml") and b"<html" in lowered):
        return "html"
    return "text"


def _looks_binary(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head:
        return True
    controls = sum(1 for b in head if b < 9 or 13 < b < 32 or b == 127)
    if controls / len(head) > 0.05:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return False
    except UnicodeDecodeError:
        return detect_encoding(head) is None


def discover(paths: list[Path], fmt: str, *, follow_symlinks: bool = False) -> Iterator[Source]:
    """Every file under `paths`, each with a format or the reason it will not be loaded.

    Directories are walked in sorted order, following symbolic links to folders once (a link
    back to a folder already walked is a 'symlink loop'); hidden files are skipped and said
    so. A symbolic link that leads outside the folder being walked is skipped (and said so)
    unless follow_symlinks: a link planted in a shared folder must not pull in ~/.ssh/id_rsa.
    A BEIR folder (with corpus.jsonl) counts as one source: its corpus only. Files
    without a known extension are sniffed (`sniff`).
    """
    for path in paths:
        if fmt == "beir" or (fmt == "auto" and is_beir_dir(path)):
            if path.is_dir():
                corpus = next((path / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (path / n).is_file()), None)
                if corpus is None:
                    raise LoadError(f"{show(path)}: not a BEIR folder (no corpus.jsonl or corpus.jsonl.gz)")
                yield _source(corpus, "beir")
            else:
                yield _source(path, "beir")
        elif path.is_dir():
            yield from _walk(path, path, fmt, {os.path.realpath(path)}, follow_symlinks)
        else:
            yield _source(path, fmt)


def _walk(root: Path, folder: Path, fmt: str, seen: set[str], follow_symlinks: bool) -> Iterator[Source]:
    real_root = os.path.realpath(root)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        yield Source(
            folder,
            None,
            problem=Skipped(
                str(folder), "unreadable", f"{show(folder)}: cannot list ({exc.strerror or exc})", "failed"
            ),
        )
        return
    for entry in entries:
        child = Path(entry.path)
        if entry.name.startswith("."):
            yield Source(child, None, problem=Skipped(str(child), "hidden", f"{show(child)}: hidden, skipped"))
            continue
        if not follow_symlinks and entry.is_symlink():
            target = os.path.realpath(child)
            if target != real_root and not target.startswith(real_root + os.sep):
                yield Source(
                    child,
                    None,
                    problem=Skipped(
                        str(child),
                        "symlink outside",
                        f"{show(child)}: a symbolic link out of {show(root)}, skipped (ingest with --follow-symlinks to read it)",
                    ),
                )
                continue
        try:
            is_dir = entry.is_dir()  # follows links
        except OSError:
            is_dir = False
        if is_dir:
            real = os.path.realpath(child)
            if real in seen:
                yield Source(
                    child,
                    None,
                    problem=Skipped(
                        str(child), "symlink loop", f"{show(child)}: links back to {show(real)}, already walked"
                    ),
                )
                continue
            yield from _walk(root, child, fmt, seen | {real}, follow_symlinks)
            continue
        yield _source(child, fmt)


def _source(path: Path, fmt: str) -> Source:
    def problem(reason: str, detail: str, status: str = "failed") -> Source:
        return Source(path, None, problem=Skipped(str(path), reason, f"{show(path)}: {detail}", status))

    try:
        info = path.stat()
    except OSError as exc:
        if path.is_symlink():
            try:
                os.stat(path)
            except OSError as inner:
                if inner.errno == 40:  # ELOOP
                    return problem("symlink loop", "symbolic link loop")
            return problem("broken symlink", f"symbolic link to a missing file ({os.readlink(path)})")
        return problem("unreadable", f"cannot read ({exc.strerror or exc})")
    if not stat.S_ISREG(info.st_mode):
        return problem("not a file", "not a regular file (device, socket or pipe)", "skipped")
    if fmt != "auto":
        return Source(path, fmt, info.st_size)
    found = detect_format(path)
    if found:
        return Source(path, found, info.st_size)
    try:
        head = _read_head(path)
    except LoadError as exc:
        return problem(exc.reason, str(exc).split(": ", 1)[-1])
    except OSError as exc:
        return problem("unreadable", f"cannot read ({exc.strerror or exc})")
    sniffed = sniff(path, head)
    if sniffed == "binary":
        return problem("binary", "binary file, not text", "skipped")
    return Source(path, sniffed, info.st_size)


# --------------------------------------------------------------------------- reading


def _read(path: Path, cap: int) -> bytes:
    """The file's bytes (inflated when gzip), never more than `cap` of them."""
    try:
        with _open(path) as f:
            raw = f.read(cap + 1)
    except OSError as exc:
        raise LoadError(f"{show(path)}: cannot read ({exc.strerror or exc})", reason="unreadable") from None
    if len(raw) > cap:
        raise LoadError(
            f"{show(path)}: over the {cap / 1e6:.1f} MB limit (raise it with --max-bytes)", reason="too large"
        )
    if raw[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                inflated = g.read(cap + 1)  # a zip bomb stops here, at cap + 1 bytes
        except (OSError, EOFError, zlib.error) as exc:
            raise LoadError(f"{show(path)}: not a valid gzip file ({exc})", reason="bad gzip") from None
        if len(inflated) > cap:
            raise LoadError(
                f"{show(path)}: inflates to more than the {cap / 1e6:.1f} MB limit (a zip bomb? raise it with --max-bytes)",
                reason="inflates too large",
            )
        return inflated
    return raw


def _check_zip(path: Path, raw: bytes, cap: int) -> None:
    """A .docx/.epub is a zip: refuse one whose members would inflate past the limit."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as z:
            total = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile as exc:
        raise LoadError(f"{show(path)}: not a valid zip container ({exc})") from None
    if total > cap:
        raise LoadError(
            f"{show(path)}: inflates to {total / 1e6:.1f} MB, over the {cap / 1e6:.1f} MB limit (a zip bomb?)",
            reason="inflates too large",
        )


def load_file(path: Path, fmt: str, options: LoadOptions) -> LoadedFile:
    """Parse one file completely; raise LoadError (one line, with a reason) if it cannot be used."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LoadError(f"{show(path)}: cannot read ({exc.strerror or exc})", reason="unreadable") from None
    if size > options.max_bytes:
        raise LoadError(
            f"{show(path)}: {size / 1e6:.1f} MB is over the {options.max_bytes / 1e6:.1f} MB limit (raise it with --max-bytes)",
            reason="too large",
        )
    skipped: list[Skipped] = []
    if fmt in ("text", "markdown") and size > STREAM_BYTES and not path.name.lower().endswith(".gz"):
        docs = [_streamed_text(path, fmt, size)]
    else:
        raw = _read(path, options.max_bytes)
        if fmt in ("docx", "epub"):
            _check_zip(path, raw, options.max_bytes)
        docs = _LOADERS[fmt](path, raw, options, skipped)
    for doc in docs:
        doc.metadata = {**doc.metadata, **options.metadata}
        doc.mime_type = doc.mime_type or MIME_TYPES[fmt]
        doc.size = doc.size or size
    return LoadedFile(path, docs, skipped)


# --------------------------------------------------------------------------- helpers

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _bom_encoding(raw: bytes) -> str | None:
    return next((enc for bom, enc in _BOMS if raw.startswith(bom)), None)


def detect_encoding(raw: bytes) -> str | None:
    """The likeliest 8-bit/multibyte encoding of non-UTF-8 bytes, or None (not text).

    charset-normalizer ranks candidates by "chaos"; on short Western text several code pages
    tie (cp1257 reads 'très' as 'trčs'), so among near-ties the Windows code pages win, cp1252
    first: it is what Latin-1 text almost always is (HTML5 decodes ISO-8859-1 as cp1252).
    """
    from charset_normalizer import from_bytes

    results = list(from_bytes(raw[:262144]))
    if not results:
        return None
    best = min(m.chaos for m in results)
    close = [m for m in results if m.chaos <= best + 0.1]

    def preference(m) -> tuple[int, float]:
        names = [m.encoding, *m.could_be_from_charset]
        if "cp1252" in names:
            return (0, m.chaos)
        if m.encoding.startswith("cp") or m.encoding.startswith("koi8"):
            return (1, m.chaos)
        if m.encoding.startswith("mac"):
            return (3, m.chaos)
        return (2, m.chaos)

    choice = min(close, key=preference)
    if choice.encoding in _MULTIBYTE and _high_bytes(raw[:262144]) < 64:
        # A handful of accented letters in English text (b'L\xe9ger') also "decode" as one CJK
        # character each; real Chinese or Japanese text has hundreds of high bytes.
        try:
            raw.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return "cp1252" if "cp1252" in (choice.encoding, *choice.could_be_from_charset) else choice.encoding


_MULTIBYTE = {
    "big5",
    "big5hkscs",
    "cp932",
    "cp949",
    "cp950",
    "gb2312",
    "gbk",
    "gb18030",
    "johab",
    "shift_jis",
    "shift_jis_2004",
    "shift_jisx0213",
    "euc_jp",
    "euc_jis_2004",
    "euc_jisx0213",
    "euc_kr",
    "hz",
    "iso2022_jp",
    "iso2022_kr",
}


def _high_bytes(raw: bytes) -> int:
    return len(raw.translate(None, bytes(range(128))))  # what is left once ASCII is deleted


def _decode(path: Path, raw: bytes, declared: str | None = None) -> tuple[str, str]:
    """(text, encoding): a BOM, else the declared charset, else UTF-8, else detection."""
    bom = _bom_encoding(raw)
    if bom:
        return raw.decode(bom, errors="replace"), bom.replace("-sig", "")
    if declared:
        try:
            codec = codecs.lookup(declared).name
            if codec in ("latin-1", "iso8859-1", "ascii"):
                codec = "cp1252"  # what browsers do with both
            return raw.decode(codec), codec
        except (LookupError, UnicodeDecodeError):
            pass  # a wrong declaration: fall back to the content
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        if _looks_binary(raw[:_SNIFF_BYTES]) and b"\x00" in raw[:_SNIFF_BYTES]:
            raise LoadError(
                f"{show(path)}: binary file, not text (PDFs need --format pdf or a .pdf name)",
                reason="binary",
                status="skipped",
            ) from None
        encoding = detect_encoding(raw)
        if encoding is None:
            raise LoadError(
                f"{show(path)}: not UTF-8 and no other encoding fits (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                reason="undecodable",
            ) from None
        return raw.decode(encoding, errors="replace"), encoding


def _text_of(path: Path, raw: bytes, declared: str | None = None) -> tuple[str, dict[str, str]]:
    """Decoded text and the metadata that records a non-UTF-8 encoding."""
    if b"\x00" in raw[:_SNIFF_BYTES] and _bom_encoding(raw) is None:
        raise LoadError(
            f"{show(path)}: binary file, not text (PDFs need --format pdf or a .pdf name)",
            reason="binary",
            status="skipped",
        )
    text, encoding = _decode(path, raw, declared)
    return text, ({} if encoding in ("utf-8", "ascii") else {"encoding": encoding})


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


def locate_headings(text: str, found: list[tuple[int, str]]) -> list[tuple[int, list[str]]]:
    """(level, heading text) in document order → (offset in `text`, heading path) for each found."""
    out: list[tuple[int, list[str]]] = []
    stack: list[tuple[int, str]] = []
    cursor = 0
    for level, heading in found:
        heading = _normalise_space(heading)
        if not heading:
            continue
        at = text.find(heading, cursor)
        if at < 0:
            continue
        cursor = at + len(heading)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        out.append((text.rfind("\n", 0, at) + 1, [h for _, h in stack]))  # from its line's start ('## ' included)
    return out


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
_MD_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)", re.M)


def markdown_headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of the markdown headings, outside fenced code blocks (where `# …` is a comment)."""
    fences = [m.start() for m in _MD_FENCE.finditer(text)]

    def in_code(offset: int) -> bool:
        return bisect.bisect_left(fences, offset) % 2 == 1  # an odd number of fences opened before it

    return [(len(m.group(1)), m.group(2)) for m in _MD_HEADING.finditer(text) if not in_code(m.start())]


def _streamed_text(path: Path, fmt: str, size: int) -> SourceDocument:
    """A large text file as a stream of segments: hashed once, decoded incrementally."""
    digest = hashlib.sha256()
    try:
        with _open(path) as f:
            head = f.read(1 << 20)
            digest.update(head)
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise LoadError(f"{show(path)}: cannot read ({exc.strerror or exc})", reason="unreadable") from None
    if b"\x00" in head[:_SNIFF_BYTES] and _bom_encoding(head) is None:
        raise LoadError(f"{show(path)}: binary file, not text", reason="binary", status="skipped")
    encoding = _bom_encoding(head)
    if encoding is None:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = detect_encoding(head)
            if encoding is None:
                raise LoadError(f"{show(path)}: not UTF-8 and no other encoding fits", reason="undecodable") from None

    def segments() -> Iterator[str]:
        # utf-8 strictly (a bad byte later on fails the file, whose writes then roll back);
        # a detected 8-bit encoding never fails.
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict" if encoding == "utf-8" else "replace")
        carry = ""
        try:
            with _open(path) as f:
                while True:
                    block = f.read(SEGMENT_CHARS)
                    text = carry + decoder.decode(block, final=not block)
                    if not block:
                        if text.strip():
                            yield _normalise_space(text)
                        return
                    cut = _cut(text)
                    carry = text[cut:]
                    if text[:cut].strip():
                        yield _normalise_space(text[:cut])
        except UnicodeDecodeError as exc:
            raise LoadError(
                f"{show(path)}: not UTF-8 past its first megabyte ({exc.reason})", reason="undecodable"
            ) from None
        except OSError as exc:
            raise LoadError(f"{show(path)}: cannot read ({exc.strerror or exc})", reason="unreadable") from None

    doc = _file_doc(
        path, "", path.stem, **({} if encoding in ("utf-8", "ascii") else {"encoding": encoding.replace("-sig", "")})
    )
    doc.stream = segments
    doc.content_sha256 = digest.hexdigest()
    doc.size = size
    return doc


def _cut(text: str) -> int:
    """Where to end a segment: the last paragraph break, else line break, else space in its second half."""
    half = len(text) // 2
    for sep in ("\n\n", "\n", " "):
        at = text.rfind(sep, half)
        if at > 0:
            return at + len(sep)
    return len(text)


# --------------------------------------------------------------------------- one loader per format


_TITLE_SKIP = re.compile(r"^(copyright\b|©|\(c\)|spdx-license|#!|-\*-)|^[\W_]+$|;\s*urgency=", re.I)
_UNDERLINE = re.compile(r"^\s*([=\-~*#])\1{2,}\s*$")


def first_line_title(text: str, fallback: str) -> str:
    """A plain-text document's title: its first line that stands alone like a heading (a blank line or
    an underline follows it) and reads like one (not a copyright notice, a shebang, a changelog entry or
    a line of symbols; at most 100 characters), else `fallback` (the stem). "base-passwd for Debian"
    says more than "README"; a one-paragraph file keeps its stem."""
    lines = text.splitlines()
    for i, line in enumerate(lines[:20]):
        line = line.strip()
        if not line:
            continue
        if _TITLE_SKIP.search(line) or len(line) > 100 or sum(c.isalpha() for c in line) < 3:
            continue
        after = lines[i + 1] if i + 1 < len(lines) else None
        if after is not None and (not after.strip() or _UNDERLINE.match(after)):
            return line
        return fallback  # the first real line runs on into a paragraph: prose, not a title
    return fallback


def load_text(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    text, meta = _text_of(path, raw)
    text = _normalise_space(text)
    return [_file_doc(path, text, first_line_title(text, path.stem), **meta)]


_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_HEADING = re.compile(r"\A\s*#\s+(.+?)\s*#*\s*(?:\n|\Z)")
_SETEXT_TITLE = re.compile(r"^([^\n!\[<|][^\n]{1,99})\n=+[ \t]*$", re.M)  # "Title\n=====" (not an image line)


def load_markdown(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    text, meta = _text_of(path, raw)
    text = _FRONT_MATTER.sub("", text.replace("\r\n", "\n"))
    heading = _HEADING.match(text)  # a leading '# Title' line is the title
    if heading:
        title, text = heading.group(1).strip(), text[heading.end() :]  # indexed and embedded once, as the title
    else:
        title = None
    text = _normalise_space(text)
    found = markdown_headings(text)
    if title is None:  # badges or prose first: the first heading further down (ATX or setext) names it
        setext = _SETEXT_TITLE.search(text)
        candidates = [(m.start(), m.group(1).strip()) for m in [setext] if m] + [
            (text.find(h), h) for level, h in found[:1] if level <= 2
        ]
        named = [(at, t) for at, t in candidates if at >= 0 and sum(c.isalpha() for c in t) >= 3]
        title = min(named)[1] if named else path.stem
    doc = _file_doc(path, text, title, **meta)
    doc.headings = locate_headings(text, found)
    return [doc]


_BOILERPLATE = (
    "script",
    "style",
    "noscript",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "svg",
    "iframe",
    "template",
    "button",
)
_BLOCKS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "table",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "blockquote",
    "br",
    "dd",
    "dt",
    "figcaption",
    "td",
    "th",
}
# A charset the page declares, in its first bytes: <?xml … encoding="…"?>, <meta charset="…">,
# or <meta http-equiv="Content-Type" content="text/html; charset=…">.
_DECLARED = re.compile(
    rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)|<meta[^>]*?charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.I
)
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")


def declared_charset(raw: bytes) -> str | None:
    m = _DECLARED.search(raw[:4096])
    return (m.group(1) or m.group(2)).decode("ascii") if m else None


def html_to_text(path: Path, raw: bytes) -> tuple[str, str | None, dict[str, str]]:
    """(text, title, metadata) of an HTML/XHTML page, decoded from bytes by its declared charset."""
    text, title, meta, _ = _html(path, raw)
    return text, title, meta


_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _html(path: Path, raw: bytes) -> tuple[str, str | None, dict[str, str], list[tuple[int, list[str]]]]:
    import lxml.html

    text, meta = _text_of(path, raw, declared_charset(raw))
    # lxml refuses a str that still carries an encoding declaration; the text is decoded already.
    text = _XML_DECLARATION.sub("", text)
    if not text.strip():
        return "", None, meta, []
    try:
        root = lxml.html.document_fromstring(text)
    except Exception as exc:  # lxml raises several types for hopeless markup
        raise LoadError(f"{show(path)}: cannot parse HTML ({exc})") from None
    title_el = root.find(".//title")
    h1 = root.find(".//h1")
    title = (
        (title_el.text_content().strip() if title_el is not None else "")
        or (h1.text_content().strip() if h1 is not None else "")
        or None
    )
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
    found: list[tuple[int, str]] = []
    for el in body.iter():
        tag = el.tag.split("}")[-1].lower() if isinstance(el.tag, str) else ""
        if tag in _BLOCKS or tag in _HEADING_TAGS:
            parts.append("\n\n")
        if tag in _HEADING_TAGS:
            found.append((_HEADING_TAGS[tag], el.text_content()))
        if el.text and tag not in ("html",):
            parts.append(el.text)
        if el is not body and el.tail:
            parts.append(el.tail)
    text = _normalise_space("".join(parts))
    return text, title, meta, locate_headings(text, found)


def load_html(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    text, title, meta, headings = _html(path, raw)
    doc = _file_doc(path, text, title or path.stem, **meta)
    doc.headings = headings
    return [doc]


def load_pdf(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(raw))
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise LoadError(f"{show(path)}: not a readable PDF ({exc})") from None
    title = (info.title if info and info.title else None) or path.stem
    parts: list[str] = []
    starts: list[tuple[int, int]] = []
    offset = 0
    for number, page in enumerate(pages, start=1):
        page = _normalise_space(page)
        if not page:
            continue
        if parts:
            offset += 2  # the "\n\n" between pages
        starts.append((offset, number))
        parts.append(page)
        offset += len(page)
    doc = _file_doc(path, "\n\n".join(parts), str(title), pages=len(pages))
    doc.pages = starts
    return [doc]


def load_docx(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    """Paragraphs and table cells of a Word document, in order (python-docx)."""
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(raw))
        blocks: list[str] = []
        found: list[tuple[int, str]] = []
        first_heading = None
        for paragraph in document.paragraphs:
            text = paragraph.text.strip()
            if not text:
                continue
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            if first_heading is None and (style == "Title" or style.startswith("Heading")):
                first_heading = text
            level = style.removeprefix("Heading ").strip()
            if level.isdigit():
                found.append((int(level), text))
            blocks.append(text)
        for table in document.tables:
            for row in table.rows:
                cells = [c.text.strip() for c in row.cells if c.text.strip()]
                if cells:
                    blocks.append(" | ".join(dict.fromkeys(cells)))  # merged cells repeat: once each
        title = document.core_properties.title or first_heading or path.stem
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{show(path)}: not a readable .docx ({exc})") from None
    text = _normalise_space("\n\n".join(blocks))
    doc = _file_doc(path, text, title)
    doc.headings = locate_headings(text, found)
    return [doc]


def load_epub(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    """The chapters of an EPUB in reading (spine) order, as one document (EbookLib + the HTML loader)."""
    import warnings

    from ebooklib import epub

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EbookLib warns about options it will change one day
            book = epub.read_epub(io.BytesIO(raw), options={"ignore_ncx": True})
        chapters: list[str] = []
        for idref, _linear in book.spine:
            item = book.get_item_with_id(idref)
            if item is None:
                continue
            text, _title, _meta = html_to_text(path, item.get_content())  # chapters: headings not located
            if text:
                chapters.append(text)
        titles = book.get_metadata("DC", "title")
    except (epub.EpubException, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise LoadError(f"{show(path)}: not a readable .epub ({exc})") from None
    title = (titles[0][0] if titles and titles[0][0] else None) or path.stem
    return [_file_doc(path, "\n\n".join(chapters), title)]


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
        raise LoadError(
            f"{where}: no text field (tried {options.text_field or 'text, contents, body, content'}; set --text-field)"
        )
    if id_field is not None and id_field not in record:
        raise LoadError(f"{where}: no id field {id_field!r}")
    text = record[text_field]
    text = "" if text is None else str(text)
    external_id = str(record[id_field]) if id_field else where
    title = record.get(title_field) if title_field else None
    used = {text_field, id_field, title_field}
    metadata = {
        key: value
        for key, value in record.items()
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


def _load_jsonl(
    path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped], *, beir: bool
) -> list[SourceDocument]:
    text, _meta = _text_of(path, raw)
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
                raise LoadError(message + "; pass --skip-bad to skip bad lines", reason="bad record") from None
            skipped.append(Skipped(where, "bad record", message))
        except LoadError as exc:
            if not options.skip_bad:
                raise LoadError(f"{exc}; pass --skip-bad to skip bad lines", reason="bad record") from None
            skipped.append(Skipped(where, "bad record", str(exc)))
    return docs


def load_jsonl(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    return _load_jsonl(path, raw, options, skipped, beir=False)


def load_beir(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    return _load_jsonl(path, raw, options, skipped, beir=True)


def load_csv(path: Path, raw: bytes, options: LoadOptions, skipped: list[Skipped]) -> list[SourceDocument]:
    text, _meta = _text_of(path, raw)
    delimiter = "\t" if path.name.lower().rstrip(".gz").endswith(".tsv") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    docs = []
    try:
        for number, row in enumerate(reader, start=2):  # line 1 is the header
            where = f"{path}:{number}"
            if None in row:  # more cells than header fields
                message = f"{where}: {len(row[None]) + len(reader.fieldnames or [])} cells for {len(reader.fieldnames or [])} columns"
                if not options.skip_bad:
                    raise LoadError(message + "; pass --skip-bad to skip bad rows", reason="bad record")
                skipped.append(Skipped(where, "bad record", message))
                continue
            try:
                docs.append(_record_doc(path, where, dict(row), options, beir=False))
            except LoadError as exc:
                if not options.skip_bad:
                    raise LoadError(f"{exc}; pass --skip-bad to skip bad rows", reason="bad record") from None
                skipped.append(Skipped(where, "bad record", str(exc)))
    except csv.Error as exc:
        raise LoadError(f"{show(path)}:{reader.line_num}: malformed CSV ({exc})", reason="bad record") from None
    return docs


_LOADERS = {
    "text": load_text,
    "markdown": load_markdown,
    "html": load_html,
    "pdf": load_pdf,
    "docx": load_docx,
    "epub": load_epub,
    "jsonl": load_jsonl,
    "csv": load_csv,
    "beir": load_beir,
}
