"""docs/restore-by-hand.md, followed literally: the shell blocks marked ``# restore-test: NAME``
are cut out of the page and run with bash, one scenario at a time, with the page's variables
given values (the ``NAME=value`` lines of the variables block replaced, the commented ones set in
the environment). Nothing of offsite.backup runs in the restore: only aws, sftp, jq, sha256sum,
age, zstd, tar, psql, createdb and pg_restore. The restored data must equal the source.

The backups are made the normal way, by ``offsite-backup run`` with two job files: S3 (moto) and
SFTP (the harness sshd), one PostgreSQL database in plain format, a whole cluster, files, a MariaDB
database, and an age-encrypted custom-format dump."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.harness import pg
from tests.integration.helpers import cli, pg_source, s3_repo, sftp_repo
from tests.integration.test_mysql import create_sample as create_mysql_sample
from tests.integration.test_mysql import drop as drop_mysql
from tests.integration.test_mysql import fingerprint as mysql_fingerprint

PAGE = Path(__file__).resolve().parents[2] / "docs" / "restore-by-hand.md"
BLOCK = re.compile(r"^```sh\n# restore-test: ([a-z0-9-]+)\n(.*?)^```", re.M | re.S)
TOOLS = ("aws", "jq", "sftp", "sha256sum", "age", "zstd", "tar", "psql", "createdb", "pg_restore", "mysql")


def blocks() -> dict[str, str]:
    found = dict(BLOCK.findall(PAGE.read_text()))
    assert found, "no restore-test blocks in docs/restore-by-hand.md"
    return found


def script(*names: str, **values: str) -> str:
    """The page's blocks in this order; ``NAME=value`` lines of the variables block take ours."""
    page = blocks()
    text = page["variables"]
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=\S*", f"{name}={shlex.quote(value)}", text, flags=re.M)
        assert count == 1, f"the variables block sets no {name}"
    return "set -euo pipefail\n" + text + "".join(page[n] for n in names)


def run_page(text: str, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"--- script ---\n{text}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def backups(moto, sshd, tmp_path_factory):
    """Two jobs run once by offsite-backup: plain, cluster, files and MariaDB to S3 and SFTP; an
    age-encrypted dump to S3."""
    missing = [t for t in TOOLS if shutil.which(t, path="/usr/bin:/bin") is None]
    assert not missing, f"scripts/bootstrap.sh installs these: {missing}"
    work = tmp_path_factory.mktemp("by-hand")
    uid = uuid.uuid4().hex[:8]
    plain_db, other_db, secret_db = (f"offsite_byhand_{uid}_{n}" for n in ("plain", "other", "secret"))
    for name in (plain_db, other_db, secret_db):
        pg.create_sample_database(name, scale=0.05)
    mysql_db = f"offsite_byhand_{uid}_my"
    create_mysql_sample(mysql_db)
    files = work / "srv" / "www"
    (files / "static").mkdir(parents=True)
    (files / "index.html").write_text("<h1>crm</h1>\n")
    (files / "static" / "app.js").write_bytes(os.urandom(4096))
    bucket = moto.create_bucket(f"offsite-byhand-{uid}")
    remote = f"byhand-{uid}"
    sshd.make_dir(remote)
    identity = work / "age-identity.txt"
    keygen = subprocess.run(["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True)
    recipient = re.search(r"(age1\w+)", keygen.stderr + keygen.stdout).group(1)
    repositories = [s3_repo(moto, bucket, prefix="hosts/crm"), sftp_repo(sshd, remote)]
    plain = {"name": f"plain{uid}", "local": {"path": str(work / "local-plain")},
             "log": {"path": str(work / f"plain{uid}.log")},
             "sources": [{"name": "crm_db", "source": pg_source(plain_db, format="plain")},
                         {"name": "cluster", "source": pg_source(None, databases=[plain_db, other_db])},
                         {"name": "www", "source": {"type": "files", "paths": [str(files)]}},
                         {"name": "shop", "source": {"type": "mysql", "database": mysql_db, "host": "127.0.0.1",
                                                     "port": 3306, "user": "root"}}],
             "repositories": repositories}
    plain["sources"][1]["source"].pop("database")
    secret = {"name": f"secret{uid}", "local": {"path": str(work / "local-secret")},
              "log": {"path": str(work / f"secret{uid}.log")}, "encryption": {"recipients": [recipient]},
              "sources": [{"name": "crm_secret", "source": pg_source(secret_db)}],
              "repositories": [repositories[0]]}
    for job in (plain, secret):
        path = work / f"{job['name']}.yml"
        path.write_text(yaml.safe_dump(job))
        result = cli("run", str(path))
        assert result.returncode == 0, result.stderr + (work / f"{job['name']}.log").read_text()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8", **pg.PG_ENV,
           "AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key,
           "AWS_DEFAULT_REGION": moto.region, "AWS_CONFIG_FILE": "/dev/null",
           "S3": f"aws --endpoint-url {moto.endpoint_url}", "BUCKET": bucket, "PREFIX": "hosts/crm",
           "HOST": sshd.host, "PORT": str(sshd.port), "SSH_USER": sshd.user, "KEY": sshd.private_key,
           "KNOWN_HOSTS": sshd.known_hosts, "REMOTE": remote, "AGE_IDENTITY": str(identity)}
    (work / ".my.cnf").write_text("[client]\nhost=127.0.0.1\nport=3306\nuser=root\n")
    made, made_mysql = [plain_db, other_db, secret_db], [mysql_db]
    try:
        yield {"env": env, "work": work, "files": files, "plain_db": plain_db, "other_db": other_db,
               "secret_db": secret_db, "mysql_db": mysql_db, "uid": uid, "made": made, "made_mysql": made_mysql}
    finally:
        for name in made:
            pg.drop_database(name)
        drop_mysql(*made_mysql)


def test_postgresql_plain_format_from_s3(backups):
    target = f"offsite_byhand_{backups['uid']}_restored"
    backups["made"].append(target)
    text = script("fetch-s3", "check", "decrypt", "decompress", "load-postgresql",
                  SET="crm_db", WORK=str(backups["work"] / "pg-s3"))
    out = run_page(text, dict(backups["env"], DB=target))
    assert ": OK" in out.stdout                       # sha256sum -c
    assert pg.fingerprint(target) == pg.fingerprint(backups["plain_db"])


def test_postgresql_age_encrypted_from_s3(backups):
    target = f"offsite_byhand_{backups['uid']}_decrypted"
    backups["made"].append(target)
    text = script("fetch-s3", "check", "decrypt", "decompress", "load-postgresql",
                  SET="crm_secret", WORK=str(backups["work"] / "age-s3"))
    assert text.count("age --decrypt") == 1
    run_page(text, dict(backups["env"], DB=target))
    assert list((backups["work"] / "age-s3").glob("*.dump.zst.age"))
    assert pg.fingerprint(target) == pg.fingerprint(backups["secret_db"])

    # the wrong identity: the page's commands stop at decryption, nothing is loaded
    other = backups["work"] / "other-identity.txt"
    subprocess.run(["age-keygen", "-o", str(other)], capture_output=True, check=True)
    wrong = f"offsite_byhand_{backups['uid']}_wrongkey"
    failed = subprocess.run(["bash", "-c", script("fetch-s3", "check", "decrypt", "decompress", "load-postgresql",
                                                  SET="crm_secret", WORK=str(backups["work"] / "age-wrong"))],
                            env=dict(backups["env"], DB=wrong, AGE_IDENTITY=str(other)),
                            capture_output=True, text=True, timeout=300, check=False)
    assert failed.returncode != 0 and "no identity matched" in failed.stderr
    assert not pg.database_exists(wrong)


def test_files_from_sftp(backups):
    work = backups["work"] / "files-sftp"
    text = script("fetch-sftp", "check", "decrypt", "decompress", "load-files", SET="www", WORK=str(work))
    run_page(text, backups["env"])
    restored = work / "files" / backups["files"].relative_to("/")
    assert (restored / "index.html").read_text() == "<h1>crm</h1>\n"
    assert (restored / "static" / "app.js").read_bytes() == (backups["files"] / "static" / "app.js").read_bytes()


def test_postgresql_cluster_from_sftp(backups):
    suffix = "_bh"
    targets = [backups["plain_db"] + suffix, backups["other_db"] + suffix]
    backups["made"].extend(targets)
    text = script("fetch-sftp", "check", "decrypt", "decompress", "load-postgresql-cluster",
                  SET="cluster", WORK=str(backups["work"] / "cluster-sftp"))
    run_page(text, dict(backups["env"], SUFFIX=suffix))
    for original, restored in zip((backups["plain_db"], backups["other_db"]), targets):
        assert pg.fingerprint(restored) == pg.fingerprint(original)


def test_mysql_from_s3(backups):
    target = f"offsite_byhand_{backups['uid']}_myrestored"
    backups["made_mysql"].append(target)
    text = script("fetch-s3", "check", "decrypt", "decompress", "load-mysql", SET="shop",
                  WORK=str(backups["work"] / "mysql-s3"))
    run_page(text, dict(backups["env"], DB=target))
    assert mysql_fingerprint(target) == mysql_fingerprint(backups["mysql_db"])
