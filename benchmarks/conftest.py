import os

import pytest


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory):
    os.environ.setdefault("LCEVAL_CACHE", str(tmp_path_factory.mktemp("lceval-cache")))
    from lceval.demo import demo_model_path

    return demo_model_path()


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model)
