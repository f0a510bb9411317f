"""Captions for text-conditioned training (clip, text-conditional and latent diffusion).

An item's own caption, stored with the dataset version (genloom.datasets.captions), is used
when it has one; otherwise its label is phrased here. Each labelled training image gets one of several phrasings of its label ("a handwritten seven",
"the digit 7", "number seven, handwritten", ...), chosen afresh at every step, so the
model learns the *meaning* shared by the phrasings rather than one string: prompts in
words never seen in training still land near them in MiniLM's embedding space.
These fallback captions are a pure function of the label, so they need no storage and are
the same on every machine.
"""

from __future__ import annotations

from genloom.datasets.captions import DIGIT_WORDS, words_for

__all__ = ["DIGIT_WORDS", "TEMPLATES", "CaptionTable", "caption", "caption_embeddings", "embed_prompts", "words_for"]

# {word}: "seven"; {label}: "7" (or the label itself when it is not a digit).
TEMPLATES = (
    "a handwritten {word}",
    "the digit {label}",
    "number {word}, handwritten",
    "a picture of the number {word}",
    "{word}",
    "the numeral {label} written by hand",
    "an image of a {word}",
    "digit {word}",
)


def captions_for_label(label: str) -> list[str]:
    """Every phrasing of one label, in a fixed order."""
    return [template.format(**words_for(label)) for template in TEMPLATES]


def caption(label: str, index: int) -> str:
    """The `index`-th phrasing (mod the number of templates): deterministic."""
    return captions_for_label(label)[index % len(TEMPLATES)]


def caption_embeddings(labels: list[str]):
    """MiniLM embeddings of every phrasing of every label: a float32 tensor (labels, templates, 384).

    The same bundled model that embeds retrieval queries, so a prompt at sampling time
    is embedded exactly as the training captions were."""
    import torch

    from genloom.embeddings import embed

    texts = [text for label in labels for text in captions_for_label(label)]
    vectors = embed(texts)
    return torch.from_numpy(vectors).reshape(len(labels), len(TEMPLATES), -1)


def embed_prompts(prompts: list[str]):
    """MiniLM embeddings of free-text prompts: (n, 384) float32."""
    import torch

    from genloom.embeddings import embed

    return torch.from_numpy(embed(list(prompts)))


class CaptionTable:
    """MiniLM embeddings of a training set's captions, looked up per batch.

    An item with a stored caption (this dataset version's) always gets that caption; one
    without gets a random phrasing of its label. `groups` names what counts as the same
    caption (clip's positives): the label's class for phrased labels, one group per distinct
    stored caption otherwise."""

    def __init__(self, version_id: int, label_names: list[str], device):
        import torch

        from genloom.datasets.captions import item_captions
        from genloom.db.engine import session_scope

        with session_scope() as s:
            stored = item_captions(s, version_id)
        self.by_label = caption_embeddings(list(label_names)).to(device) if label_names else None
        texts = sorted(set(stored.values()))
        index = {text: i for i, text in enumerate(texts)}
        self.item_caption = {item_id: index[text] for item_id, text in stored.items()}
        self.stored = embed_prompts(texts).to(device) if texts else None
        self.num_labels = len(label_names)
        self.device = device
        parts = [t.reshape(-1, t.shape[-1]) for t in (self.by_label, self.stored) if t is not None]
        if not parts:
            from genloom.errors import BadInput

            raise BadInput("text conditioning needs captioned or labelled items, but the dataset has neither")
        self.center = torch.cat(parts).mean(dim=0)

    def lookup(self, item_ids: list[int], y, generator=None):
        """(text embeddings (N, 384), caption groups (N,)) for a batch's items and label indices `y`."""
        import torch

        from genloom.errors import BadInput

        rows = [self.item_caption.get(int(i), -1) for i in item_ids]
        has = torch.tensor(rows, dtype=torch.long, device="cpu") >= 0
        y = y.to("cpu") if y is not None else torch.full((len(rows),), -1, dtype=torch.long)
        if bool(((~has) & (y < 0)).any()) or (self.by_label is None and not bool(has.all())):
            raise BadInput("some training items have neither a caption nor a label; caption them first")
        dim = (self.stored if self.stored is not None else self.by_label).shape[-1]  # type: ignore[union-attr]
        out = torch.empty(len(rows), dim, device=self.device)
        groups = torch.empty(len(rows), dtype=torch.long)
        if self.by_label is not None and bool((~has).any()):
            which = torch.randint(self.by_label.shape[1], (len(rows),), generator=generator)
            label_rows = (~has).nonzero().squeeze(1)
            out[label_rows.to(self.device)] = self.by_label[y[label_rows], which[label_rows]]
            groups[label_rows] = y[label_rows]
        if self.stored is not None and bool(has.any()):
            stored_rows = has.nonzero().squeeze(1)
            chosen = torch.tensor(rows, dtype=torch.long)[stored_rows]
            out[stored_rows.to(self.device)] = self.stored[chosen.to(self.device)]
            groups[stored_rows] = self.num_labels + chosen
        return out, groups.to(self.device)
