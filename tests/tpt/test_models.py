import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tpt.config import ModelSource
from tpt.models import ModelNotFoundError, resolve_model
from tpt.offline import OfflineDataError, read_member


def test_missing_local_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist or has no config.json"):
        resolve_model(ModelSource(kind="local", name=str(tmp_path / "nope")))


HUB_PROBE = """
import sys
network = []
def refuse_network(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        network.append(event)
        raise OSError(f"network used: {event}")
sys.addaudithook(refuse_network)
from tpt.config import ModelSource
from tpt.models import ModelNotFoundError, resolve_model
try:
    resolve_model(ModelSource(kind="hf_hub", name="org-that-does-not-exist/model-xyz"))
except ModelNotFoundError as exc:
    print(exc)
print("network:", network)
"""


def test_hub_model_without_hub_access_is_a_clear_error(tmp_path):
    """In a process of its own, since huggingface_hub reads HF_HUB_OFFLINE once, at import. Any name lookup or
    connection is refused and recorded there, so offline mode, not a failed request, must be what stops it."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # nothing cached
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run([sys.executable, "-c", HUB_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    message, network = done.stdout.strip().splitlines()
    assert message.startswith("hub model 'org-that-does-not-exist/model-xyz' could not be fetched: ")
    assert "outgoing traffic has been disabled" in message
    assert network == "network: []"


def test_gguf_wheel_model_converts_to_a_loadable_hf_folder(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert "quantization_config" not in config  # plain float weights that vLLM and lm-eval load
    assert (smollm2_dir / "model.safetensors").stat().st_size > 100 * 2**20


def test_wheel_members_are_read_and_unknown_ones_refused():
    assert read_member("evals", "evals/registry/data/schelling_point/owt_5.jsonl").count(b"\n") == 1000
    with pytest.raises(OfflineDataError, match="not inside"):
        read_member("evals", "evals/nothing.jsonl")
    with pytest.raises(OfflineDataError, match="unknown wheel"):
        read_member("not-pinned", "x")
