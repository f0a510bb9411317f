"""Real folders: --include/--exclude globs choose the files, every document knows where its file
sits (path, folder, ext: filterable with --where), and that knowledge never makes an unchanged
file look changed."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "doc"
    for relative, text in {
        "README.md": "# Overview\nThis package parses configuration files.",
        "guide/install.md": "# Installing\nRun the installer and accept the licence.",
        "guide/usage/cli.txt": "The command line takes a --verbose flag for louder output.",
        "vendor/jquery.min.js": "function(){return jquery}" * 20,
        "NEWS.gz.bak": "old news",
    }.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_selected_matches_relative_paths_and_names():
    from ingest.loaders import selected

    assert not selected("vendor/jquery.min.js", [], ["*.js"])
    assert not selected("vendor/x/y.txt", [], ["vendor/*"])
    assert selected("guide/install.md", ["*.md"], [])
    assert not selected("guide/usage/cli.txt", ["*.md"], [])
    assert selected("guide/usage/cli.txt", ["*.md", "guide/usage/*"], ["*.js"])


def test_path_metadata_is_relative_to_the_folder_given(tmp_path):
    from ingest.loaders import path_metadata

    root = tmp_path / "doc"
    assert path_metadata(root / "guide" / "usage" / "cli.TXT", [root]) == {
        "path": "guide/usage/cli.TXT", "folder": "guide/usage", "ext": "txt"}
    assert path_metadata(root / "README.md", [root]) == {"path": "README.md", "folder": ".", "ext": "md"}
    assert path_metadata(tmp_path / "alone.md", [tmp_path / "alone.md"])["path"] == "alone.md"


def test_include_exclude_and_where_folder(tree, db_url, cli, tiny_model):
    result = cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js", "--exclude", "*.bak",
                 "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert (report["written"], report["excluded"]) == (3, 2)
    listed = cli("documents", "list", "-c", "docs", "--json").json()
    assert sorted(r["metadata"]["path"] for r in listed) == ["README.md", "guide/install.md", "guide/usage/cli.txt"]
    hits = cli("search", "verbose flag", "-c", "docs", "--mode", "bm25", "--where", "folder=guide/usage", "--json")
    assert [Path(h["doc_id"]).name for h in hits.json()] == ["cli.txt"]
    only_md = cli("search", "installer", "-c", "docs", "--mode", "bm25", "--where", "ext=md", "--json").json()
    assert [Path(h["doc_id"]).name for h in only_md] == ["install.md"]
    # The same files reached from a folder above: the path keys change, the content hash does not.
    again = cli("ingest", tree / "guide", "-c", "docs", "--model", tiny_model, "--json").json()
    assert (again["written"], again["unchanged"]) == (0, 2)
    included = cli("ingest", tree, "-c", "md-only", "--model", tiny_model, "--include", "*.md", "--json").json()
    assert (included["written"], included["excluded"]) == (2, 3)


def test_set_meta_where_changes_every_matching_document_at_once(tree, db_url, cli, tiny_model):
    assert cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js").exit_code == 0
    bulk = cli("documents", "set-meta", "-c", "docs", "--where", "ext=md", "audience=ops", "tier=1", "--json")
    assert bulk.exit_code == 0, bulk.stderr
    assert bulk.json()["documents"] == 2
    tagged = cli("documents", "list", "-c", "docs", "--where", "audience=ops", "--json").json()
    assert sorted(r["metadata"]["path"] for r in tagged) == ["README.md", "guide/install.md"]
    again = cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js", "--json").json()
    assert again["written"] == 0  # metadata set in bulk does not make files look changed
    none = cli("documents", "set-meta", "-c", "docs", "--where", "ext=pdf", "audience=ops")
    assert none.exit_code == 1 and none.stderr == "error: no current document matches the filter: nothing changed\n"


def test_copies_of_a_file_take_one_slot_in_the_top_k(tmp_path, db_url, cli, tiny_model):
    folder = tmp_path / "twins"
    for package in ("python3-pip", "python3-pip-whl"):
        (folder / package).mkdir(parents=True)
        (folder / package / "README").write_text("pip installs Python packages from the index.")
    (folder / "other.txt").write_text("Packages are installed by apt on Debian.")
    (folder / "python3-pip-doc").mkdir()  # a near-exact copy: re-wrapped, re-cased, re-punctuated
    (folder / "python3-pip-doc" / "README").write_text("PIP installs Python packages\n  from the index!")
    assert cli("ingest", folder, "-c", "twins", "--model", tiny_model).exit_code == 0
    hits = cli("search", "installs packages", "-c", "twins", "--mode", "bm25", "-k", "3", "--json").json()
    assert sorted(Path(h["doc_id"]).name for h in hits) == ["README", "other.txt"]  # distinct sources fill the k
    from genloom.db.engine import session_scope
    from genloom.retrieval.search import search

    with session_scope() as s:
        both = search(s, "installs packages", collection="twins", mode="bm25", k=4, distinct_text=False)
    assert len(both) == 4


def test_citations_and_search_show_where_a_bare_file_name_sits(tmp_path, db_url, cli, tiny_model):
    from genloom.retrieval.locations import format_location

    assert format_location("README", "/d/wget/README", {"path": "wget/README"}) == "README · wget/README"
    assert format_location("guide", "/d/guide.pdf", {"path": "guide.pdf", "page": 2}) == "guide · page 2"
    folder = tmp_path / "doc"
    for package in ("wget", "gnupg"):
        (folder / package).mkdir(parents=True)
        (folder / package / "README").write_text(f"{package} downloads and verifies things over the network.")
    assert cli("ingest", folder, "-c", "readmes", "--model", tiny_model).exit_code == 0
    asked = cli("ask", "What does wget download?", "-c", "readmes", "--model", "extractive", "--json").json()
    assert {s["location"] for s in asked["citations"]} <= {"README · wget/README", "README · gnupg/README"}
    shown = cli("search", "downloads", "-c", "readmes", "--mode", "bm25")
    assert "wget/README" in shown.stdout and "gnupg/README" in shown.stdout


def test_titles_come_from_inside_the_document(tmp_path):
    from ingest.loaders import LoadOptions, first_line_title, load_markdown, load_text

    readme = tmp_path / "README"
    readme.write_text("Copyright 2020 Someone\n\nbase-passwd for Debian\n----------------------\n\nThis package ...\n")
    assert load_text(readme, readme.read_bytes(), LoadOptions(), [])[0].title == "base-passwd for Debian"
    assert first_line_title("Plain text body.", "a") == "a"  # a one-line file is not its own title
    assert first_line_title("This paragraph runs on\nacross two lines.", "notes") == "notes"  # prose, not a title
    assert first_line_title("frob (1.2) unstable; urgency=low\n\n  * Fix.", "changelog") == "changelog"
    badges = tmp_path / "README.md"
    badges.write_text("[![Build](https://ci/badge.svg)](https://ci)\n\nSodium library\n==============\n\nText.\n")
    assert load_markdown(badges, badges.read_bytes(), LoadOptions(), [])[0].title == "Sodium library"
    later = tmp_path / "GUIDE.md"
    later.write_text("Some intro words first.\n\n## Installing frob\n\nRun it.\n")
    assert load_markdown(later, later.read_bytes(), LoadOptions(), [])[0].title == "Installing frob"


def test_a_meta_change_updates_metadata_without_embedding_again(tree, db_url, cli, tiny_model, monkeypatch):
    import genloom.embeddings

    first = cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js", "--meta", "team=a", "--json")
    assert first.exit_code == 0, first.stderr
    before = {r["id"]: r for r in cli("documents", "list", "-c", "docs", "--json").json()}
    calls = []
    real = genloom.embeddings.embed
    monkeypatch.setattr(genloom.embeddings, "embed", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js", "--meta", "team=b", "--json")
    out = again.json()
    assert (out["written"], out["chunks"], out["metadata_updated"]) == (0, 0, len(before))
    assert calls == []  # content unchanged: no embedding call at all
    after = {r["id"]: r for r in cli("documents", "list", "-c", "docs", "--where", "team=b", "--json").json()}
    assert after.keys() == before.keys()  # the same document versions, now with the new metadata
    same = cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js", "--meta", "team=b", "--json")
    assert (same.json()["written"], same.json()["metadata_updated"]) == (0, 0)  # and the next run sees it current
    (tree / "README.md").write_text("# Overview\nThis package now parses YAML too.")
    changed = cli("ingest", tree, "-c", "docs", "--model", tiny_model, "--exclude", "*.js", "--meta", "team=b", "--json")
    assert changed.json()["written"] == 1 and calls  # a content change still embeds
