from pathlib import Path

import pytest
import yaml

from pipelines.experiments import experiment_path
from tpt.config import PAPER_PROMPT, ConfigError, load_experiment


def test_paper_experiment_reproduces_the_paper_settings():
    paper = load_experiment(experiment_path("paper_8b"))
    g, t = paper.generation, paper.training
    assert g.model.name == "Qwen/Qwen3-8B" and g.engine == "vllm"
    assert (g.sampling.temperature, g.sampling.top_p, g.sampling.max_thinking_tokens) == (0.6, 0.9, 8192)
    assert g.sampling.stop == ("</think>",) and g.max_document_tokens == 2048
    assert g.prompt.template == PAPER_PROMPT
    assert {s.name for s in paper.corpus.sources} == {"fineweb_edu", "megamath_web_pro_max"}
    assert (t.seq_len, t.batch_tokens, t.token_budget) == (8192, 4 * 2**20, 100 * 10**9)
    assert (t.lr, t.warmup_steps, t.schedule, t.weight_decay, t.grad_clip) == (3e-4, 100, "constant", 0.1, 1.0)
    assert t.betas == (0.9, 0.95)
    assert (t.model.hidden_size, t.model.num_layers, t.model.num_kv_heads) == (4096, 32, 8)


def test_prompt_is_the_papers_verbatim():
    assert PAPER_PROMPT.startswith("{{CONTEXT}}\n## End of the context\nSimulate an expert’s in-depth thought process")
    assert PAPER_PROMPT.endswith("Use Feynman technique whenever possible to ensure a deep understanding.")


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(experiment_path("embedded").read_text())
    mutate(raw)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["generation"]["sampling"].update(temperature=-1), "generation.sampling.temperature"),
        (lambda r: r["training"].update(seq_len=1), "training.seq_len"),
        (lambda r: r["training"].update(batch_tokens=1000), "not a multiple of seq_len"),
        (lambda r: r["corpus"].update(typo_field=3), "corpus.typo_field"),
        (lambda r: r["generation"]["prompt"].update(template="no slot"), "{{CONTEXT}}"),
        (lambda r: r["evaluation"].update(benchmarks=["gsm8k", "nope"]), "evaluation.benchmarks"),
        (lambda r: r["corpus"]["sources"][0].update(kind="ftp"), "corpus.sources.0"),
        (lambda r: r.update(name="Has Spaces"), "name"),
        (lambda r: r["training"]["model"].update(num_heads=3), "not divisible"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, mutate, expected):
    path = _write(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path)) and expected in message


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_experiment(listing)
