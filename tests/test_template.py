"""template.yaml (AWS SAM) and what deploys it: cfn-lint, runtime, layer contents, least privilege, bucket, secret,
parameters and outputs, and the Docker-free build's template rewrite and glibc check (infra/build_lambda.py).
Routes are checked against the functions' apps in test_gateway.py."""

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from recommender.local.template import Tagged, dump_template, parse_template, plain, read_template, resolved
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six"}
# PyJWT imports cryptography when it happens to be installed (moto brings it here), for the RSA and EC algorithms
# the service never uses; its HMAC needs only the standard library, and `make build-lambda-pip` answers requests
# from a layer without cryptography.
OPTIONAL = {"cryptography", "cffi", "pycparser"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_builder():
    """infra/build_lambda.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("build_lambda", ROOT / "infra" / "build_lambda.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_lambda"] = module
    spec.loader.exec_module(module)
    return module


builder = load_builder()


@pytest.fixture(scope="module")
def template() -> dict:
    return read_template(TEMPLATE)


def resources_of(template: dict, kind: str) -> dict:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def statements(function: dict) -> list[dict]:
    return [plain(s) for policy in function["Properties"]["Policies"] for s in policy["Statement"]]


def test_cfn_lint_is_clean():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_functions_layer_and_runtime_agree(template):
    runtime = resolved(template, template["Globals"]["Function"]["Runtime"])
    (layer,) = resources_of(template, "AWS::Serverless::LayerVersion").values()
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert resolved(template, layer["Properties"]["CompatibleRuntimes"]) == [runtime]
    assert layer["Properties"]["ContentUri"] == "shared/" and (ROOT / "shared" / "requirements.txt").is_file()
    assert "build-SharedLayer:" in (ROOT / "shared" / "Makefile").read_text()
    functions = resources_of(template, "AWS::Serverless::Function")
    assert set(functions) == {"AuthFunction", "RecommendFunction"}
    for function in functions.values():
        props = function["Properties"]
        module, _, attribute = props["Handler"].rpartition(".")
        source = ROOT / props["CodeUri"] / f"{module}.py"
        assert source.is_file() and re.search(rf"^{attribute} = Mangum\(", source.read_text(), re.M)
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert required == ">=3.11" and runtime == "python3.11"


def test_runtime_is_the_python_the_tests_run_on(template):
    runtime = resolved(template, template["Globals"]["Function"]["Runtime"])
    running = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if running != runtime:
        pytest.skip(
            f"the tests run on {running}, the template deploys {runtime}: run them with {runtime} "
            "(make clean && make test PYTHON=python3.11) to test what is deployed"
        )
    assert running == runtime


def test_snapstart_is_off_by_default_and_complete_when_on(template, tmp_path):
    """RecommendSnapStart: off, the template is the one the other tests check (python3.11, no snapshot, the model
    loaded by the first request); on, both functions and the layer move to python3.12, the recommend function
    snapshots its published versions (served through its alias) with the model preloaded; the variant lints clean."""
    recommend = template["Resources"]["RecommendFunction"]["Properties"]
    for on in (False, True):
        resolve = lambda v: resolved(template, v, {"RecommendSnapStart": "true"} if on else None)  # noqa: E731
        runtime = resolve(template["Globals"]["Function"]["Runtime"])
        (layer,) = resources_of(template, "AWS::Serverless::LayerVersion").values()
        assert runtime == ("python3.12" if on else "python3.11")
        assert resolve(layer["Properties"]["CompatibleRuntimes"]) == [runtime]
        snapstart = resolve(recommend["SnapStart"])
        assert snapstart == ({"ApplyOn": "PublishedVersions"} if on else Tagged("!Ref", "AWS::NoValue"))
        assert resolve(recommend["Environment"]["Variables"]["PRELOAD_MODEL"]) == ("true" if on else "false")
        assert recommend["AutoPublishAlias"] == "live"
    assert template["Parameters"]["RecommendSnapStart"]["Default"] == "false"
    limits = plain(template["Rules"]["SnapStartLimits"])
    assert limits["RuleCondition"] == ["RecommendSnapStart", "true"]
    asserted = json.dumps(limits["Assertions"])
    assert "RecommendProvisionedConcurrency" in asserted and "RecommendEphemeralStorage" in asserted
    # The "on" variant as a deployment would see it: cfn-lint checks it as it checks the default.
    variant = tmp_path / "template.yaml"
    variant.write_text(
        TEMPLATE.read_text().replace(
            'RecommendSnapStart:\n    Type: String\n    Default: "false"',
            'RecommendSnapStart:\n    Type: String\n    Default: "true"',
        )
    )
    assert 'Default: "true"' in variant.read_text()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(variant)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_least_privilege(template):
    functions = resources_of(template, "AWS::Serverless::Function")
    expected = {
        "AuthFunction": ["users"],
        "RecommendFunction": ["analytics", "experiments", "feed", "keys", "models", "rules", "users"],
    }
    # The recommend function's only writes: new event batches, when each API key was last used, and what the
    # console's workplace changes (rules versions, the model pointers), each route after checking the user's role.
    console_writes = [
        "arn:${AWS::Partition}:s3:::${ModelBucket}/${StoragePrefix}/rules/*",
        "arn:${AWS::Partition}:s3:::${ModelBucket}/${StoragePrefix}/feed/*",
        "arn:${AWS::Partition}:s3:::${ModelBucket}/${StoragePrefix}/models/ACTIVE",
        "arn:${AWS::Partition}:s3:::${ModelBucket}/${StoragePrefix}/models/STAGED",
    ]
    writes = {
        "AuthFunction": [],
        "RecommendFunction": [
            "arn:${AWS::Partition}:s3:::${ModelBucket}/${StoragePrefix}/events/raw/*",
            "arn:${AWS::Partition}:s3:::${ModelBucket}/${StoragePrefix}/keys/used/*",
        ],
    }
    for name, prefixes in expected.items():
        granted = statements(functions[name])
        assert all(s["Effect"] == "Allow" for s in granted)
        actions = {a for s in granted for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        assert actions == {"s3:GetObject", "s3:ListBucket", "secretsmanager:GetSecretValue"} | (
            {"s3:PutObject", "s3:DeleteObject"} if writes[name] else set()
        ), name
        if writes[name]:
            assert [s["Resource"] for s in granted if s["Action"] == ["s3:PutObject", "s3:DeleteObject"]] == [
                console_writes
            ]
        assert [s["Resource"] for s in granted if s["Action"] == "s3:PutObject"] == writes[name]
        objects = [
            r
            for s in granted
            if s["Action"] == "s3:GetObject"
            for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
        ]
        assert objects == [f"arn:${{AWS::Partition}}:s3:::${{ModelBucket}}/${{StoragePrefix}}/{p}/*" for p in prefixes]
        (listing,) = [s for s in granted if s["Action"] == "s3:ListBucket"]
        assert listing["Resource"] == "ModelBucket.Arn"
        scoped = listing["Condition"]["StringLike"]["s3:prefix"]
        assert sorted([scoped] if isinstance(scoped, str) else scoped) == [
            f"${{StoragePrefix}}/{p}/*" for p in prefixes
        ]
        (secret,) = [s for s in granted if s["Action"] == "secretsmanager:GetSecretValue"]
        assert secret["Resource"] == "JwtSecret"


def test_bucket_is_private_versioned_and_encrypted(template):
    (bucket,) = resources_of(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    assert props["VersioningConfiguration"]["Status"] == "Enabled"
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert bucket["DeletionPolicy"] == "Retain"  # deleting the stack never deletes the models and users


def test_secret_is_generated_and_both_functions_read_it(template):
    from recommender.serving.tokens import MIN_SECRET_LENGTH

    (secret,) = resources_of(template, "AWS::SecretsManager::Secret").values()
    assert secret["Properties"]["GenerateSecretString"]["PasswordLength"] >= MIN_SECRET_LENGTH
    env = plain(template["Globals"]["Function"]["Environment"]["Variables"])
    assert env["JWT_SECRET_ARN"] == "JwtSecret" and "JWT_SECRET" not in env
    assert env["STORAGE_URL"] == "s3://${ModelBucket}/${StoragePrefix}" and env["CACHE_DIR"].startswith("/tmp/")


def test_parameters_are_used_and_outputs_given(template):
    parameters = set(template["Parameters"])
    assert {
        "AuthMemorySize",
        "RecommendMemorySize",
        "FunctionTimeout",
        "AuthReservedConcurrency",
        "RecommendReservedConcurrency",
        "RecommendProvisionedConcurrency",
        "ModelPollSeconds",
    } <= parameters
    body = TEMPLATE.read_text().split("\nConditions:", 1)[1]
    unused = [p for p in parameters if not re.search(rf"(!Ref {p}\b|\${{{p}}})", body)]
    assert not unused, f"parameters never used: {unused}"
    assert {"ApiUrl", "BucketName"} <= set(template["Outputs"])


def test_shared_requirements_are_the_serving_dependencies():
    layer = [Requirement(r) for r in builder.serving_requirements()]
    project = {
        Requirement(r).name: Requirement(r)
        for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    assert {r.name for r in layer} == {
        "annoy",
        "numpy",
        "fastapi",
        "python-multipart",
        "orjson",
        "mangum",
        "PyJWT",
        "libpass",
        "bcrypt",
        "pyyaml",
    }
    for r in layer:  # the development install's bounds, plus any the Lambda platform adds (numpy<2.3)
        assert set(project[r.name].specifier) <= set(r.specifier), f"{r.name}: keep in step with pyproject.toml"


def test_layer_requirements_cover_what_the_functions_import(user, trained_storage, event, tmp_path):
    """Every distribution the two functions import while answering is in the layer (or in the Lambda runtime)."""
    from importlib.metadata import distribution, packages_distributions

    from recommender.serving.tokens import issue_token
    from tests.functions.test_handlers import cold_start_events, run_cold_start

    secret = "k" * 48
    env = {
        **os.environ,
        "STORAGE_URL": str(trained_storage.root),
        "JWT_SECRET": secret,
        "CACHE_DIR": str(tmp_path / "cache"),
        "BCRYPT_ROUNDS": "4",
    }
    recommend = run_cold_start(env, cold_start_events(event, issue_token("alice", secret, stamp=user.stamp), "85123A"))
    auth = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import json, sys; sys.path.insert(0, 'functions/auth'); import app; from types import SimpleNamespace as S;"
                "r = app.handler(json.load(sys.stdin), S(get_remaining_time_in_millis=lambda: 30000));"
                "assert r['statusCode'] == 200, r; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
            ),
        ],
        input=json.dumps(event("token")),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert auth.returncode == 0, auth.stderr
    startup = subprocess.run(
        [sys.executable, "-c", "import sys, json; print(json.dumps(list(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # e.g. a venv's .pth hooks
    imported = (set(recommend["modules"]) | set(json.loads(auth.stdout.splitlines()[-1]))) - set(json.loads(startup))
    owners = packages_distributions()
    used = {normalized(distribution(d).metadata["Name"]) for m in imported for d in owners.get(m, [])}

    layer, todo = set(), [Requirement(r) for r in builder.serving_requirements()]
    while todo:  # the requirements and everything they require, as pip would install them
        r = todo.pop()
        name = normalized(r.name)
        if name in layer:
            continue
        layer.add(name)
        for dep in distribution(name).requires or []:
            dep = Requirement(dep)
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append(dep)
    missing = used - layer - RUNTIME_PROVIDED - OPTIONAL - {"recommender"}
    assert not missing, f"imported while serving but not in shared/requirements.txt: {sorted(missing)}"


def test_samconfig_and_build_environment():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    assert config["default"]["build"]["parameters"]["use_container"] is True
    assert config["default"]["build"]["parameters"]["build_image"] == [
        "SharedLayer=public.ecr.aws/sam/build-python3.11"
    ]
    assert config["default"]["deploy"]["parameters"]["capabilities"] == "CAPABILITY_IAM"
    env_file = ROOT / config["default"]["build"]["parameters"]["container_env_var_file"]
    flags = json.loads(env_file.read_text())["Parameters"]["ANNOY_COMPILER_ARGS"].split(",")
    assert "-march=native" not in flags and any(f.startswith("-march=") for f in flags)


def test_built_template_points_at_build_folders_and_keeps_tags(template):
    import copy

    built = builder.built_template(copy.deepcopy(template))
    assert built["Resources"]["AuthFunction"]["Properties"]["CodeUri"] == "AuthFunction"
    assert built["Resources"]["SharedLayer"]["Properties"]["ContentUri"] == "SharedLayer"
    assert "Metadata" not in built["Resources"]["SharedLayer"]
    text = dump_template(built)
    again = parse_template(text)
    assert again["Outputs"] == template["Outputs"] and "!GetAtt 'ModelBucket.Arn'" in text


def test_glibc_check_names_modules_too_new_for_amazon_linux_2(tmp_path):
    layer = tmp_path / "python"
    (layer / "ok").mkdir(parents=True)
    (layer / "ok" / "fine.so").write_bytes(b"\0GLIBC_2.2.5\0GLIBC_2.17\0GLIBCXX_3.4.22\0CXXABI_1.3.9\0")
    (layer / "bad.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0GLIBC_2.14\0GLIBC_2.34\0GLIBCXX_3.4.30\0")
    problems = builder.check_compiled_modules(layer)
    assert len(problems) == 2 and all(p.startswith("bad.cpython-311") for p in problems)
    assert "GLIBC_2.34 (Amazon Linux 2 has GLIBC_2.26)" in problems[0] + problems[1]


def test_event_options_are_off_by_default_and_complete_when_on(template, tmp_path):
    """EventsFirehose and RetrainSchedule: off by default, every resource of each under its condition; on, the
    stream writes the raw layout compaction reads, the retraining is an image on a schedule with a role that never
    reaches users or the signing secret; the "on" variant lints clean."""
    from recommender.training.event_tables import RAW_KEY

    params = template["Parameters"]
    assert params["EventsFirehose"]["Default"] == "false" and params["RetrainSchedule"]["Default"] == ""
    assert params["RetrainData"]["Default"] == "events:"
    conditions = plain(template["Conditions"])
    assert conditions["UseFirehose"] == ["EventsFirehose", "true"]
    assert conditions["UseRetraining"] == [["RetrainSchedule", ""]]
    needs = plain(template["Rules"]["RetrainingNeedsAnImage"])
    assert needs["RuleCondition"] == [["RetrainSchedule", ""]] and needs["Assertions"][0]["Assert"] == [
        ["RetrainImageUri", ""]
    ]
    resources = template["Resources"]
    firehose = {n for n, r in resources.items() if n.startswith("EventsFirehose") or n == "EventsDeliveryStream"}
    retraining = {n for n in resources if n.startswith("Retrain")}
    assert firehose == {"EventsDeliveryStream", "EventsFirehoseRole", "EventsFirehoseWriterPolicy"}
    assert retraining == {
        "RetrainFunction",
        "RetrainRole",
        "RetrainScheduleRule",
        "RetrainPermission",
        "RetrainInvokeConfig",
        "RetrainLogGroup",
    }
    assert all(resources[n].get("Condition") == "UseFirehose" for n in firehose)
    assert all(resources[n].get("Condition") == "UseRetraining" for n in retraining)
    assert all(
        r.get("Condition") is None for n, r in resources.items() if n not in firehose | retraining
    )  # nothing else changes

    destination = plain(resources["EventsDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"])
    prefix = destination["Prefix"].replace("${StoragePrefix}/", "")
    key = prefix.replace("!{timestamp:yyyy-MM-dd}", "2026-12-02").replace("!{timestamp:HH}", "09")
    key += "recommender-events-1-2026-12-02-09-05-00-1b2c3d4e" + destination["FileExtension"]
    assert RAW_KEY.match(key), key
    assert destination["BucketARN"] == "ModelBucket.Arn"

    recommend = resources["RecommendFunction"]["Properties"]
    assert plain(recommend["Environment"]["Variables"]["EVENTS_FIREHOSE_STREAM"]) == [
        "UseFirehose",
        "EventsDeliveryStream",
        "",
    ]
    writer = plain(resources["EventsFirehoseWriterPolicy"]["Properties"])
    assert writer["Roles"] == ["RecommendFunctionRole"]
    assert writer["PolicyDocument"]["Statement"][0]["Resource"] == "EventsDeliveryStream.Arn"

    function = resources["RetrainFunction"]["Properties"]
    assert function["PackageType"] == "Image" and function["Timeout"] == 900
    assert plain(function["Code"]["ImageUri"]) == "RetrainImageUri"
    assert plain(function["Environment"]["Variables"]["RETRAIN_DATA"]) == "RetrainData"
    dockerfile = (ROOT / "infra" / "retrain" / "Dockerfile").read_text()
    (command,) = re.findall(r'^CMD \["([\w.]+)"\]', dockerfile, re.M)
    module, _, name = command.rpartition(".")
    assert callable(getattr(importlib.import_module(module), name))
    granted = json.dumps(plain(resources["RetrainRole"]["Properties"]["Policies"]))
    assert "/events/*" in granted and "/models/*" in granted
    assert "users" not in granted and "secretsmanager" not in granted
    rule = plain(resources["RetrainScheduleRule"]["Properties"])
    assert rule["ScheduleExpression"] == "RetrainSchedule" and rule["Targets"][0]["Arn"] == "RetrainFunction.Arn"

    variant = tmp_path / "template.yaml"
    text = TEMPLATE.read_text()
    for name, value in (
        ("EventsFirehose", '"true"'),
        ("RetrainSchedule", '"rate(1 day)"'),
        ("RetrainImageUri", '"123456789012.dkr.ecr.us-east-1.amazonaws.com/recommender-retrain:1"'),
    ):
        text = re.sub(rf"(\n  {name}:\n    Type: String\n    Default: )[^\n]*", rf"\g<1>{value}", text)
    variant.write_text(text)
    assert 'Default: "rate(1 day)"' in text
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(variant)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
