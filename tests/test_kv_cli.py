"""`hotpipe kv`: end to end on a tiny saved model, and bad input exits 2 without a traceback."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hotpipe.cli import main  # noqa: E402

TEXT = ("The assignment statement binds names to objects. A target list is evaluated "
        "from left to right, and each target is bound to the corresponding object. ") * 3


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("tiny_llama")
    tk = Tokenizer(models.BPE(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=120, special_tokens=["[UNK]"]))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    (d / "prompt.txt").write_text(TEXT)
    return d


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["keyformer", "window", "full"])
def test_generate_keeps_the_budget(tiny_dir, capsys, policy):
    rc = main(["kv", "generate", "--model", str(tiny_dir), "--prompt-file", str(tiny_dir / "prompt.txt"),
               "--policy", policy, "--kv", "0.4", "--max-new-tokens", "5", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    n = out["prompt_tokens"]
    assert out["new_tokens"] == 5
    kept = n + 4 if policy == "full" else math.ceil(0.4 * n)  # the last token is never fed back
    assert out["tokens_kept_per_layer"] == kept
    assert out["kv_bytes"] == 2 * 2 * 2 * kept * 8 * 4  # K+V, layers, KV heads, tokens, head dim, fp32


@pytest.mark.parametrize("argv,needle", [
    (["--kv", "0"], "kv.kv"),
    (["--kv", "1.2"], "kv.kv"),
    (["--policy", "lru"], "kv.policy"),
    (["--recent", "1"], "kv.recent"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
])
def test_generate_bad_settings_exit_2(tiny_dir, capsys, argv, needle):
    rc = main(["kv", "generate", "--model", str(tiny_dir), "--prompt-file", str(tiny_dir / "prompt.txt"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err


def test_generate_missing_inputs_exit_2(tiny_dir, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    cases = [
        (["--model", str(tmp_path / "nope"), "--prompt-file", str(tiny_dir / "prompt.txt")], "no such model"),
        (["--model", str(tiny_dir), "--prompt-file", str(tmp_path / "nope.txt")], "prompt file not found"),
        (["--model", str(tiny_dir), "--prompt-file", str(empty)], "prompt is empty"),
    ]
    for argv, needle in cases:
        assert main(["kv", "generate", *argv]) == 2
        assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    (["--budgets", "0.5,abc"], "budgets"),
    (["--budgets", "0.5,1.5"], "kv.kv"),
    (["--policies", "keyformer,lru"], "lru"),
    (["--prompts", "0"], "prompts"),
])
def test_eval_bad_settings_exit_2(capsys, argv, needle):
    assert main(["kv", "eval", *argv]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.slow
def test_eval_prints_every_policy_and_budget(tiny_dir, tmp_path, capsys):
    pytest.importorskip("rouge_score")
    out = tmp_path / "rows.json"
    rc = main(["kv", "eval", "--model", str(tiny_dir), "--prompts", "2", "--prompt-len", "24", "--cont", "4",
               "--gen", "4", "--budgets", "0.3,0.6", "--policies", "keyformer,window", "--out", str(out)])
    assert rc == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [(r["policy"], r["kv"]) for r in rows] == [
        ("full", 1.0), ("keyformer", 0.3), ("keyformer", 0.6), ("window", 0.3), ("window", 0.6)]
    full = rows[0]
    assert full["rouge_rougeL"] == 1.0 and "| keyformer | 30% |" in table
    for r in rows[1:]:  # K+V bytes: layers, prompts, KV heads, budget tokens, head dim, fp32
        assert r["budget"] == math.ceil(r["kv"] * 24)
        assert r["kv_bytes"] == 2 * 2 * 2 * 2 * r["budget"] * 8 * 4
