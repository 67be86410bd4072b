"""Spark for the training engine: its session (spark-submit's, a test's, or a new one), the executors' environment,
and a failed job explained in one line (a data error raised on an executor found again on the driver)."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from recommender.core.errors import ConfigError, DataFileError, RecommenderError
from recommender.core.extras import optional

DEFAULT_MASTER = "local[*]"
# A data error raised on an executor crosses the JVM as text; these marks find its message again on the driver.
_MARK, _END = "<<recommender-data-error>>", "<</recommender-data-error>>"


class SparkJobFailed(RecommenderError):
    """The Spark job failed for a reason other than the input (cluster, memory, Java)."""

    status_code = 500


def _spark_modules() -> Any:
    pyspark = optional("pyspark", "ENGINE=spark")
    from pyspark.sql import SparkSession

    return pyspark, SparkSession


# Short local jobs (tests, small files): the JVM's quick compiler and no code generation halve the time to the
# first answer; long jobs on a cluster keep Spark's defaults.
QUICK_START = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.sql.codegen.wholeStage": "false",
    "spark.sql.shuffle.partitions": "2",
}


def session(master: str | None = None, conf: dict[str, str] | None = None) -> tuple[Any, bool]:
    """The active SparkSession (spark-submit's, a test's), else a new one on master (SPARK_MASTER, default
    local[*]) with conf added; and whether this call created it (then the caller stops it)."""
    _pyspark, SparkSession = _spark_modules()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    from pyspark import SparkConf

    extra = conf
    spark_conf = SparkConf()  # under spark-submit this already holds spark.master and the cluster's settings
    builder = SparkSession.builder.appName("recommender-train")
    master = (
        master or os.environ.get("SPARK_MASTER") or (None if spark_conf.contains("spark.master") else DEFAULT_MASTER)
    )
    if master:
        builder = builder.master(master)
    defaults = {
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": os.environ.get("SPARK_DRIVER_MEMORY", "2g"),
        "spark.sql.adaptive.enabled": "true",
    }
    if (master or "").startswith("local"):
        defaults["spark.sql.shuffle.partitions"] = "4"
        defaults["spark.ui.enabled"] = "false"
        # the workers run this interpreter (the project's venv), not whatever python3 is first on the PATH
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        # one machine: everything stays on the loopback interface
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        defaults["spark.driver.host"] = "127.0.0.1"
        defaults["spark.driver.bindAddress"] = "127.0.0.1"
    defaults.update(extra or {})
    for key, value in defaults.items():
        if not spark_conf.contains(key):
            builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as err:  # noqa: BLE001 - pyspark raises plain RuntimeErrors when Java is missing
        if "JAVA_GATEWAY_EXITED" in str(err) or "JAVA_HOME" in str(err) or "java" in str(err).lower():
            raise ConfigError(
                "Spark could not start Java: install Java 17 (apt-get install openjdk-17-jre-headless) "
                f"or set JAVA_HOME ({str(err).splitlines()[0]})"
            ) from None
        raise
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "ERROR"))
    return spark, True


def executor_environment(sc: Any) -> str | None:
    """Give the Python workers the S3 endpoint (and, for a local emulator, its dummy credentials and region),
    whatever the environment the JVM started with; returns the endpoint."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
    names = ["AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"]
    if endpoint and re.match(r"^https?://(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?/?$", endpoint):
        names += ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]  # the emulator's dummy ones, never real secrets
    for name in names:
        if os.environ.get(name):
            sc.environment[name] = os.environ[name]
    return endpoint


def carry_data_error(err: DataFileError) -> RuntimeError:
    """What an executor raises for a data error, so that data_error finds its message again on the driver."""
    return RuntimeError(f"{_MARK}{err.message}{_END}")


def data_error(err: BaseException) -> DataFileError | None:
    """The input's DataFileError that an executor raised (carry_data_error) and the job failed with, else None."""
    found = re.search(re.escape(_MARK) + r"(.*?)" + re.escape(_END), str(err), re.S)
    return DataFileError(found.group(1)) if found else None


def failure_cause(err: BaseException) -> str:
    """The line of a Spark failure that names its cause: the innermost "SomeError: message" of the traceback."""
    text = str(err)
    found = [
        line.strip()
        for line in re.findall(r"^\s*(?:[\w.]+\.)?\w+(?:Error|Exception): .+$", text, re.M)
        if "exception was thrown from the Python worker" not in line
    ]
    if found:
        return found[-1]
    if "Python worker exited unexpectedly" in text:  # killed, most often for memory: no Python traceback exists
        return (
            "a Python worker on an executor died (most often out of memory: give the executors more "
            "spark.executor.memoryOverhead, or the driver less memory in local mode)"
        )
    return next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
