"""The local-Kafka launcher fails with messages that say what to do, without a real JVM.

A fake `java` (a shell script) stands in for the JVM: it answers `-version`, "formats" storage,
and dies like a broker that cannot start.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from streamflow.dev import KAFKA_VERSION, KafkaJars, LocalKafka
from streamflow.dev.broker_process import heap_megabytes, tail_text
from streamflow.dev.java import find_java, parse_java_major
from streamflow.errors import DevKafkaError


def _fake_java(
    bin_dir: Path, version: str = '"17.0.9" 2023-10-17', broker_output: str = ""
) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    java = bin_dir / "java"
    java.write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *-version*) echo 'openjdk version {version}' >&2; exit 0 ;;\n"
        "  *kafka.tools.StorageTool*) exit 0 ;;\n"
        f"  *kafka.Kafka*) echo '{broker_output}'; exit 1 ;;\n"
        "esac\n"
        "exit 2\n"
    )
    java.chmod(java.stat().st_mode | stat.S_IXUSR)
    return java


def _provisioned_cache(root: Path) -> Path:
    """A cache dir that looks fully downloaded, so no test here ever runs mvn."""
    libs = root / f"kafka-{KAFKA_VERSION}" / "libs"
    libs.mkdir(parents=True)
    (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").write_bytes(b"")
    (root / f"kafka-{KAFKA_VERSION}" / ".complete").write_text("kafka_2.13.jar\n")
    return root


@pytest.fixture
def only_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """PATH reduced to one empty directory (tests put fakes there); no JAVA_HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    return bin_dir


def test_missing_java_is_reported_before_any_download(only_path: Path, tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "run", cache_dir=tmp_path / "empty-cache")
    with pytest.raises(DevKafkaError, match=r"Java 17 or newer.*no `java` on PATH") as info:
        kafka.start()
    assert "JAVA_HOME" in str(info.value) and "STREAMFLOW_BOOTSTRAP" in str(info.value)
    assert not (tmp_path / "empty-cache").exists()


def test_java_older_than_17_is_refused(only_path: Path) -> None:
    _fake_java(only_path, version='"1.8.0_392"')
    with pytest.raises(DevKafkaError, match=r"is Java 8; Kafka 4 brokers need Java 17"):
        find_java()


def test_java_home_wins_over_path(
    only_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_java(only_path, version='"11.0.2"')
    java = _fake_java(tmp_path / "jdk21" / "bin", version='"21.0.1"')
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk21"))
    runtime = find_java()
    assert runtime.major == 21 and runtime.executable == java


def test_java_home_without_java_names_the_path(
    only_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nowhere"))
    with pytest.raises(DevKafkaError, match=r"JAVA_HOME is .*nowhere"):
        find_java()


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no version here", None),
    ],
)
def test_java_major_version_is_read_from_either_numbering(output: str, major: int | None) -> None:
    assert parse_java_major(output) == major


def test_missing_mvn_is_reported_when_jars_are_not_cached(only_path: Path, tmp_path: Path) -> None:
    _fake_java(only_path)
    kafka = LocalKafka(tmp_path / "run", cache_dir=tmp_path / "empty-cache")
    with pytest.raises(DevKafkaError, match=r"`mvn` is not on PATH.*apt-get install maven"):
        kafka.start()


def test_cached_jars_need_no_mvn(only_path: Path, tmp_path: Path) -> None:
    jars = KafkaJars(cache_dir=_provisioned_cache(tmp_path / "cache"))
    assert jars.ensure() == jars.libs_dir
    assert jars.classpath().endswith("libs/*")


def test_interrupted_download_is_not_taken_for_a_cache(only_path: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    (root / f"kafka-{KAFKA_VERSION}" / "libs").mkdir(parents=True)  # no marker: incomplete
    with pytest.raises(DevKafkaError, match="mvn"):
        KafkaJars(cache_dir=root).ensure()


def test_cache_dir_follows_streamflow_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMFLOW_CACHE_DIR", str(tmp_path / "c"))
    assert KafkaJars().libs_dir == (tmp_path / "c" / f"kafka-{KAFKA_VERSION}" / "libs").resolve()


def test_broker_that_dies_while_starting_is_reported_with_its_log(
    only_path: Path, tmp_path: Path
) -> None:
    _fake_java(only_path, broker_output="ERROR Exiting Kafka due to fatal exception: boom")
    kafka = LocalKafka(tmp_path / "run", cache_dir=_provisioned_cache(tmp_path / "cache"))
    with pytest.raises(DevKafkaError, match=r"exited with status 1 while starting(.|\n)*boom"):
        kafka.start()
    status = kafka.status()
    assert not status.running and all(node.pid is None for node in status.nodes)


def test_broker_that_cannot_bind_is_reported_as_port_in_use(
    only_path: Path, tmp_path: Path
) -> None:
    _fake_java(only_path, broker_output="java.net.BindException: Address already in use")
    kafka = LocalKafka(tmp_path / "run", cache_dir=_provisioned_cache(tmp_path / "cache"))
    with pytest.raises(DevKafkaError, match=r"address already in use.*--clean"):
        kafka.start()


def test_status_and_stop_of_an_empty_run_dir_are_harmless(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path / "never-started")
    assert not kafka.is_running()
    assert kafka.status().bootstrap is None
    kafka.stop()
    with pytest.raises(DevKafkaError, match="start one first"):
        _ = kafka.bootstrap


@pytest.mark.parametrize(
    ("heap", "mb"), [("768m", 768), ("1g", 1024), ("2G", 2048), ("524288k", 512)]
)
def test_heap_sizes_use_jvm_syntax(heap: str, mb: int) -> None:
    assert heap_megabytes(heap) == mb


def test_bad_heap_size_is_refused() -> None:
    with pytest.raises(DevKafkaError, match="768m"):
        heap_megabytes("lots")


def test_log_tails_keep_the_exception_message_and_drop_stack_frames() -> None:
    log = "\n".join(
        ["INFO starting"] * 40
        + ['Exception in thread "main" ConfigException: Invalid value abc for log.segment.bytes']
        + [f"\tat org.apache.kafka.Frame{i}(Frame.java:{i})" for i in range(60)]
        + ["\t... 12 more", "INFO shut down"]
    )
    tail = tail_text(log, lines=5)
    assert "Invalid value abc" in tail and "Frame" not in tail and tail.endswith("INFO shut down")
