"""Finding a Java runtime that can run a Kafka 4 broker (17 or newer)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamflow.errors import DevKafkaError

MIN_JAVA = 17

_NO_JAVA_HELP = (
    "Install a JDK or JRE 17+ (e.g. `apt-get install openjdk-17-jre-headless`) and put `java` on "
    "PATH or point JAVA_HOME at it; or run Kafka with Docker "
    "(`docker compose -f docker/docker-compose.yml up -d`) and set "
    "STREAMFLOW_BOOTSTRAP=127.0.0.1:9092."
)
_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class JavaRuntime:
    executable: Path
    major: int


def parse_java_major(version_output: str) -> int | None:
    """The major version from `java -version` output: `"17.0.15"` → 17, `"1.8.0_392"` → 8."""
    match = _VERSION.search(version_output)
    if match is None:
        return None
    first = int(match.group(1))
    if first == 1 and match.group(2) is not None:
        return int(match.group(2))
    return first


def find_java() -> JavaRuntime:
    """`$JAVA_HOME/bin/java` if JAVA_HOME is set, else `java` on PATH; at least Java 17."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if not os.access(candidate, os.X_OK):
            raise DevKafkaError(
                f"JAVA_HOME is {java_home} but {candidate} is not an executable java. "
                + _NO_JAVA_HELP
            )
        executable = candidate
    else:
        found = shutil.which("java")
        if found is None:
            raise DevKafkaError(
                "the local Kafka broker needs Java 17 or newer, and there is no `java` on PATH "
                "(JAVA_HOME is not set). " + _NO_JAVA_HELP
            )
        executable = Path(found)
    try:
        result = subprocess.run(
            [str(executable), "-version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DevKafkaError(
            f"could not run `{executable} -version`: {exc}. " + _NO_JAVA_HELP
        ) from exc
    major = parse_java_major(result.stderr + result.stdout)
    if major is None:
        raise DevKafkaError(
            f"could not read the Java version from `{executable} -version` "
            f"(it printed {result.stderr.strip()[:200]!r}). " + _NO_JAVA_HELP
        )
    if major < MIN_JAVA:
        raise DevKafkaError(
            f"{executable} is Java {major}; Kafka 4 brokers need Java {MIN_JAVA} or newer. "
            + _NO_JAVA_HELP
        )
    return JavaRuntime(executable=executable, major=major)
