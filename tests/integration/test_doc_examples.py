"""The examples in docs/ and the README are what users copy: every YAML example parses, and
every example that is a job file (a job file on its own, or ``client_jobs[].job`` of the client
role) is accepted by ``offsite-backup run --dry-run``, which writes nothing.

The example hosts do not exist here, so probing them fails (exit 1: a source or repository
could not be reached); the job file itself must never be refused (exit 2). ``${VAR}``s get
values from an env file, a ``recipients_file`` an age recipient and a ``trusted_keys_file`` a
signer's public key, as on a real host."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.helpers import cli

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted((REPO / "docs").glob("*.md")) + [REPO / "README.md"]
FENCE = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def yaml_examples():
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            yield f"{page.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}", match.group(1)


def _client_jobs(node):
    """Every client_jobs entry anywhere in a play, a role's vars or an inventory example."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "client_jobs" and isinstance(value, list):
                yield from value
            else:
                yield from _client_jobs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _client_jobs(item)


def job_examples():
    found = []
    for where, text in yaml_examples():
        data = yaml.safe_load(text)
        if isinstance(data, dict) and "sources" in data and "local" in data:
            found.append(pytest.param(data, None, id=where))
        for entry in _client_jobs(data):
            if entry.get("job"):
                found.append(pytest.param(dict(entry["job"], name=entry["name"]), sorted(entry.get("env") or {}),
                                          id=f"{where}:{entry['name']}"))
    return found


@pytest.mark.parametrize("where, text", list(yaml_examples()), ids=[example[0] for example in yaml_examples()])
def test_every_yaml_example_parses(where, text):
    yaml.safe_load(text)


def test_the_docs_hold_job_file_examples():
    assert len(job_examples()) >= 2     # role-client.md and encryption.md at least


@pytest.mark.parametrize("job, env_names", job_examples())
def test_every_job_file_example_passes_the_dry_run(job, env_names, tmp_path):
    referenced = set(ENV_REF.findall(yaml.safe_dump(job)))
    if env_names is not None:               # a client_jobs entry: its env: must hold every ${VAR}
        assert referenced <= set(env_names), f"${{...}} not in the example's env: {referenced - set(env_names)}"
    env = {name: "https://example.invalid/value" for name in referenced}   # a URL fits every option
    if (job.get("encryption") or {}).get("recipients_file"):
        recipients = tmp_path / "recipients.txt"
        key = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
        recipients.write_text(re.search(r"public key: (age1\w+)", key).group(1) + "\n")
        job["encryption"]["recipients_file"] = str(recipients)
    if (job.get("signing") or {}).get("trusted_keys_file"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "signer")], check=True)
        job["signing"]["trusted_keys_file"] = str(tmp_path / "signer.pub")
    # the example's own paths: a dry run must create none of them
    local, log = Path(job["local"]["path"]), Path((job.get("log") or {}).get("path") or f"/var/log/offsite-backup/{job['name']}.log")
    existed = {p: p.exists() for p in (local, log, log.parent)}
    job_path = tmp_path / f"{job['name']}.yml"
    job_path.write_text(yaml.safe_dump(job))
    (tmp_path / f"{job['name']}.env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = cli("run", str(job_path), "--dry-run", "--json")
    assert result.returncode in (0, 1), result.stderr      # 2 would be: the job file is refused
    assert "job file" not in result.stderr and "unknown key" not in result.stderr, result.stderr
    assert {p: p.exists() for p in existed} == existed
