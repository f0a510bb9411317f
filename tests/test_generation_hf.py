"""The Hugging Face backend and context assembly on tiny random-weight models (no database)."""

from __future__ import annotations

import pytest

from generation_support import tiny_lm


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from genloom.generation.hf import load_hf_backend

    return load_hf_backend(tiny_lm(tmp_path_factory.mktemp("lm")))


@pytest.fixture(scope="module")
def words_lm(tmp_path_factory):
    from genloom.generation.hf import load_hf_backend

    return load_hf_backend(tiny_lm(tmp_path_factory.mktemp("lm3"), tokenizer="words"))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    from genloom.generation.hf import load_hf_backend

    return load_hf_backend(tiny_lm(tmp_path_factory.mktemp("lm2"), "tiny-gpt2", chat_template=False))


def _params(**kw):
    from genloom.generation.backend import GenParams

    return GenParams(**kw)


def test_chat_template_renders_and_counts_in_the_models_tokens(llama):
    prompt = llama.render([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello fox"}])
    assert prompt == "<|system|>\nBe brief.</s>\n<|user|>\nhello fox</s>\n<|assistant|>\n"
    # The template wrote its own markers: no extra BOS is added when counting or generating.
    assert llama.count_tokens(prompt) == len(llama.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert llama.context_window == 512


def test_without_a_chat_template_the_prompt_is_a_plain_transcript(gpt2):
    assert not gpt2.has_chat_template
    prompt = gpt2.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "and?"}])
    assert prompt == "User: hi\n\nAssistant: yo\n\nUser: and?\n\nAssistant:"
    assert gpt2.context_window == 256
    out = gpt2.generate(prompt, params=_params(max_new_tokens=4))
    assert out.output_tokens == 4 and out.finish_reason == "length"


def test_streaming_yields_the_same_text_and_token_counts_are_exact(words_lm):
    lm = words_lm  # one token per word: every new token is printable at once
    prompt = lm.render([{"role": "user", "content": "quick brown fox"}])
    pieces: list[str] = []
    out = lm.generate(prompt, params=_params(max_new_tokens=12, temperature=1.0, seed=1), on_text=pieces.append)
    assert len(pieces) >= 6 and "".join(pieces) == out.text
    assert out.input_tokens == lm.count_tokens(prompt)
    assert out.output_tokens == 12 and out.finish_reason == "length"
    # The streamed text is the decoded new tokens, the same without a streamer.
    again = lm.generate(prompt, params=_params(max_new_tokens=12, temperature=1.0, seed=1))
    assert again.text == out.text


def test_stop_strings_cut_the_text_and_stop_generating(llama):
    prompt = llama.render([{"role": "user", "content": "quick brown fox"}])
    full = llama.generate(prompt, params=_params(max_new_tokens=24))
    stop = full.text[6:9]
    assert stop and full.text.find(stop) == 6, full.text
    pieces: list[str] = []
    cut = llama.generate(prompt, params=_params(max_new_tokens=24, stop=[stop]), on_text=pieces.append)
    assert cut.text == full.text[:6]
    assert "".join(pieces) == cut.text  # the stop string never reaches the stream
    assert cut.output_tokens < full.output_tokens and cut.finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(llama):
    prompt = llama.render([{"role": "user", "content": "fox"}])
    a = llama.generate(prompt, params=_params(max_new_tokens=10, temperature=1.0, seed=7))
    b = llama.generate(prompt, params=_params(max_new_tokens=10, temperature=1.0, seed=7))
    c = llama.generate(prompt, params=_params(max_new_tokens=10, temperature=1.0, seed=8))
    assert a.text == b.text and a.text != c.text


def test_stop_trimmer_holds_back_a_possible_stop_prefix():
    from genloom.generation.hf import StopTrimmer

    t = StopTrimmer(["</answer>"])
    shown = t.feed("The answer is 4<") + t.feed("/ans") + t.feed("wer> and more")
    assert shown == "The answer is 4" and t.final() == "The answer is 4" and t.flush() == ""
    t = StopTrimmer(["END"])
    assert t.feed("abcE") + t.feed("F") + t.flush() == "abcEF"


def _source(n, text, title="T"):
    from genloom.generation.backend import Source

    return Source(n=n, chunk_id=100 + n, document_id=n, doc_id=f"d{n}", title=title, text=text)


def test_context_keeps_sources_in_rank_order_and_drops_what_does_not_fit(llama):
    from genloom.generation.context import Turn, assemble

    sources = [_source(i, f"fact number {i} " * 4) for i in range(1, 6)]
    history = [Turn(f"old question {i}", f"old answer {i}") for i in range(6)]
    roomy = assemble(llama, question="q?", candidates=sources, template_text="{sources}\n{question}", history=history,
                     max_new_tokens=8)
    assert [s.n for s in roomy.sources] == [1, 2, 3, 4, 5] and roomy.history_turns == 6
    tight = assemble(llama, question="q?", candidates=sources, template_text="{sources}\n{question}", history=history,
                     max_new_tokens=420)
    assert 1 <= len(tight.sources) < 5 and tight.dropped_sources == 5 - len(tight.sources)
    assert tight.input_tokens + 420 <= llama.context_window
    assert tight.input_tokens == llama.count_tokens(tight.prompt)
    # Sources come first; only then the newest turns that still fit.
    assert tight.history_turns < 6
    if tight.history_turns:
        assert "old question 5" in tight.prompt and "old question 0" not in tight.prompt


def test_context_that_cannot_fit_one_source_is_bad_input(llama):
    from genloom.errors import BadInput
    from genloom.generation.context import assemble

    with pytest.raises(BadInput, match="cannot fit even one source"):
        assemble(llama, question="q?", candidates=[_source(1, "long text " * 200)], template_text="{sources}{question}",
                 history=[], max_new_tokens=100)


def test_extractive_sentence_split_and_citations():
    from genloom.generation.call import citations_of
    from genloom.generation.extractive import split_sentences

    assert split_sentences("It was built in 1889. Short. (Was it \"true\"?) The end is here!") == [
        "It was built in 1889.", "(Was it \"true\"?)", "The end is here!"
    ]
    sources = [_source(1, "a"), _source(2, "b")]
    cited = citations_of("x [2] y [1] z [2] w [9]", sources)
    assert [c["n"] for c in cited] == [2, 1] and cited[0]["chunk_id"] == 102


def test_concurrent_requests_are_batched_and_each_streams_its_own_text(words_lm, monkeypatch):
    import torch

    lm = words_lm
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", None)  # exactly max_new_tokens each
    # Larger random weights: at the default init scale greedy decoding of a random model repeats one
    # token whatever the prompt, and batched == single would compare nothing.
    saved = {k: v.clone() for k, v in lm.model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lm.model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    try:
        _batched_equals_single_greedy(lm, monkeypatch)
    finally:
        lm.model.load_state_dict(saved)


def _batched_equals_single_greedy(lm, monkeypatch):
    import threading
    import time

    from genloom.generation.hf import HFBackend

    prompts = [lm.render([{"role": "user", "content": "fox " * (i + 1)}]) for i in range(6)]
    stop_word = lm.generate(prompts[2], params=_params(max_new_tokens=9)).text.split()[2]

    def params(i):
        return _params(max_new_tokens=9, stop=[stop_word] if i == 2 else [])  # greedy

    # The reference: each prompt alone, one after another (the batch-1 path).
    alone = [lm.generate(prompts[i], params=params(i)) for i in range(6)]
    assert len({out.text for out in alone}) == 6  # different prompts, different continuations

    batches: list[int] = []
    busy, release = threading.Event(), threading.Event()
    one, many = HFBackend._generate_one, HFBackend._generate_batch

    def held_one(self, request):  # the first request holds the model until the others are queued
        if not busy.is_set():
            busy.set()
            assert release.wait(60)
        return one(self, request)

    def spy(self, requests):
        batches.append(len(requests))
        return many(self, requests)

    monkeypatch.setattr(HFBackend, "_generate_one", held_one)
    monkeypatch.setattr(HFBackend, "_generate_batch", spy)
    outs: list = [None] * 7
    pieces: list[list[str]] = [[] for _ in range(7)]

    def go(slot, i):
        outs[slot] = lm.generate(prompts[i], params=params(i), on_text=pieces[slot].append)

    first = threading.Thread(target=go, args=(6, 0))  # slot 6: the request that holds the model
    first.start()
    assert busy.wait(60)
    threads = [threading.Thread(target=go, args=(i, i)) for i in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while lm._batcher.queue.qsize() < 6:  # a condition, not a guess: all six are waiting
        assert time.monotonic() < deadline, "requests never reached the queue"
        time.sleep(0.005)
    release.set()
    for t in [first, *threads]:
        t.join(60)
    # The six waiting requests were taken together: five with equal parameters shared one
    # generate, the one with a stop string (another batch key) ran alone.
    assert batches == [5]
    for slot in range(7):
        i = slot if slot < 6 else 0
        assert outs[slot].text == alone[i].text, (slot, outs[slot].text, alone[i].text)  # batched == single greedy
        assert "".join(pieces[slot]) == outs[slot].text
        assert outs[slot].input_tokens == lm.count_tokens(prompts[i])
        assert (outs[slot].output_tokens, outs[slot].finish_reason) == (alone[i].output_tokens, alone[i].finish_reason)
        if i != 2:
            assert outs[slot].output_tokens == 9 and outs[slot].finish_reason == "length"
    assert stop_word not in outs[2].text.split() and outs[2].finish_reason == "stop"


def test_lone_requests_generate_on_the_models_one_long_lived_thread(words_lm, monkeypatch):
    # torch.compile's CUDA graphs (the static cache on GPU) are kept per thread: generating on a
    # fresh thread per request would capture them again each time.
    import threading

    lm = words_lm
    generate = lm.model.generate
    threads: list[str] = []

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return generate(*args, **kwargs)

    monkeypatch.setattr(lm.model, "generate", spy)
    prompt = lm.render([{"role": "user", "content": "quick brown fox"}])
    pieces: list[str] = []
    outs = [lm.generate(prompt, params=_params(max_new_tokens=6, temperature=1.0, seed=s), on_text=pieces.append)
            for s in (1, 2, 3)]
    assert threads == ["genloom-hf-batcher"] * 3
    assert "".join(pieces) == "".join(o.text for o in outs)


def test_a_failing_generate_reaches_its_caller_and_the_model_serves_the_next_request(words_lm, monkeypatch):
    lm = words_lm
    prompt = lm.render([{"role": "user", "content": "quick brown fox"}])

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    with monkeypatch.context() as m:
        m.setattr(lm.model, "generate", broken)
        with pytest.raises(RuntimeError, match="device lost"):
            lm.generate(prompt, params=_params(max_new_tokens=4, seed=1), on_text=lambda t: None)
    assert lm.generate(prompt, params=_params(max_new_tokens=4, temperature=1.0, seed=1)).output_tokens >= 1
