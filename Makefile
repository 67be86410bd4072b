# `make help` lists the targets in three groups: using it, operating it, developing it. Every target is a thin wrapper
# over `python -m recommender ...`, or over `python -m bench ...` for the benchmarks, soak and fuzz; variables given on
# the make command line (PATH_TO_DATA, USER_NAME, PASSWORD, STORAGE_URL, HOST, PORT, ...) reach the commands through
# the environment, so values with spaces, quotes or non-ASCII characters need no extra escaping.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two installs. The light one (serving, the local server, training on one machine) is what the targets for using and
# operating the product need; the full one (every extra of pyproject.toml and the test tools) is for developing it.
# STAMP marks the full install, LIGHT_STAMP the light one; LIGHT is what a light target waits for: the full install
# when the venv has it (it holds the light one, so nothing is installed twice), else the light one.
STAMP := $(VENV)/.installed
LIGHT_STAMP := $(VENV)/.installed-light
LIGHT = $(if $(wildcard $(STAMP)),$(STAMP),$(LIGHT_STAMP))
# make report's charts need matplotlib: the light install plus the charts extra, unless the full one is there.
CHARTS_STAMP := $(VENV)/.installed-charts
CHARTS = $(if $(wildcard $(STAMP)),$(STAMP),$(CHARTS_STAMP))
CLI := $(BIN)/python -m recommender
DAYS ?= 30
SEED ?= 0
# FORCE=1 (or yes/true) activates a model even when the comparison with the active one refuses it.
FORCE_FLAG = $(if $(filter 1 yes true,$(FORCE)),--force)
# HOLDOUT=0 trains on every basket: no held-out figures, calibration or comparison with the active model (which it
# then replaces only with FORCE=1).
HOLDOUT_FLAG = $(if $(filter 0 no false,$(HOLDOUT)),--no-holdout)
# RERANK=1 also trains the learned re-ranker: better rankings, but about 10x the CPU per answer and 19x the
# training time (docs/quality.md).
RERANK_FLAG = $(if $(filter 1 yes true,$(RERANK)),--rerank)
# Training engine: single (this machine, the default) or spark (SPARK_MASTER, default local[*]; docs/scale.md).
ENGINE ?= single

export STORAGE_URL AWS_ENDPOINT_URL HOST PORT SPARK_MASTER
# Values typed on the command line are passed on exactly as typed: without this, make would expand "$..."
# inside a password or a path before the command sees it.
RAW_VARS := PASSWORD USER_NAME FULL_NAME EMAIL PATH_TO_DATA STORAGE_URL PATH_TO_FEED PATH_TO_CATALOG PATH_TO_RULES CODE OUT \
	BASKETS VERSION EXPERIMENT FROM TO API_KEY NAME SCOPES ORIGINS RATE ARMS
$(foreach v,$(RAW_VARS),$(if $(filter command line,$(origin $v)),$(eval override $v := $$(value $v))$(eval export $v)))

.PHONY: help devel test lint train train_parallel load_after_parallel_train activate rollback versions add_user set_role passwd del_user \
	list_users new_secret run run-prod kill status demo demo-address evaluate feed feed_show feed_rollback catalog rules \
	rules_show rules_rollback rules_schema export generate clean bench bench-train bench-serve bench-cold bench-scale \
	browser-deps bench-merch bench-logins bench-search bench-widget bench-events bench-report fuzz bench-spark soak bench-deps lint-template build-lambda \
	build-lambda-pip deploy emulate-s3 emulate-s3-stop catalog_show catalog_rollback events_compact events_report add_key keys revoke_key \
	experiment experiments experiment_stop \
	report simulate_shop

help: ## list every target, by what you want to do
	@echo "usage: make <target> [VARIABLE=value ...]"
	@awk 'BEGIN { FS = ":.*## " } /^##@ / { printf "\n%s\n", substr($$0, 5); next } \
		/^[a-zA-Z0-9_-]+:.*## / { printf "  %-28s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# $(call install,EXTRAS): the venv, created when missing, with the project (editable) and EXTRAS ("[dev]" or none).
define install
@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
$(BIN)/python -m pip install --quiet --upgrade pip
$(BIN)/python -m pip install --quiet -e '.$(1)'
endef

$(STAMP): pyproject.toml
	$(call install,[dev])
	@touch $(LIGHT_STAMP) $(STAMP)

$(LIGHT_STAMP): pyproject.toml
	$(call install,)
	@touch $(LIGHT_STAMP)

$(CHARTS_STAMP): pyproject.toml
	$(call install,[charts])
	@touch $(LIGHT_STAMP) $(CHARTS_STAMP)

##@ Using it: try it, train, serve, merchandise

# On a fresh clone the console's address comes before the install's output too.
demo: $(if $(wildcard $(LIGHT)),,demo-address) $(LIGHT) ## quickstart, in its own store (data/demo): train on synthetic data, serve the web console and a demo shop (PORT + 1)
	@$(CLI) demo

demo-address:
	@echo "Web console: http://$${HOST:-127.0.0.1}:$${PORT:-8090}/  (installing first: about a minute)"

train: $(LIGHT) ## train on PATH_TO_DATA (.csv, .csv.gz, .xlsx, .parquet, a folder of parts, s3://..., events:, file,events:) and activate it if no worse than the active one (FORCE=1: even if refused; ENGINE=spark; RERANK=1: with the learned re-ranker)
	@test -n "$$PATH_TO_DATA" || { echo "error: give the data file: make train PATH_TO_DATA=path/to/file.csv" >&2; exit 2; }
	$(CLI) train --engine "$(ENGINE)" "$$PATH_TO_DATA" $(FORCE_FLAG) $(HOLDOUT_FLAG) $(RERANK_FLAG)

train_parallel: $(LIGHT) ## train on PATH_TO_DATA into the staged slot; the served model is untouched
	@test -n "$$PATH_TO_DATA" || { echo "error: give the data file: make train_parallel PATH_TO_DATA=path/to/file.csv" >&2; exit 2; }
	$(CLI) train --stage --engine "$(ENGINE)" "$$PATH_TO_DATA" $(HOLDOUT_FLAG) $(RERANK_FLAG)

load_after_parallel_train: $(LIGHT) ## verify the staged model, compare it with the active one, activate it (FORCE=1: even if refused)
	$(CLI) promote $(FORCE_FLAG)

run: $(LIGHT) ## serve the API in the foreground on HOST:PORT (default 127.0.0.1:8090)
	$(CLI) serve

feed: $(LIGHT) ## upload a product feed: PATH_TO_FEED= (.csv, .csv.gz, .tsv, .xlsx); serving picks it up, no retraining
	@test -n "$${PATH_TO_FEED:-$$PATH_TO_CATALOG}" || { echo "error: give the feed file: make feed PATH_TO_FEED=path/to/products.csv" >&2; exit 2; }
	$(CLI) feed "$${PATH_TO_FEED:-$$PATH_TO_CATALOG}"

feed_show: $(LIGHT) ## print the active product feed, or one item with CODE=
	@$(CLI) feed-show $${CODE:+--code "$$CODE"}

rules: $(LIGHT) ## upload merchandising rules: PATH_TO_RULES= (YAML: block, do_not_pair, pin, boost, bury)
	@test -n "$$PATH_TO_RULES" || { echo "error: give the rules file: make rules PATH_TO_RULES=path/to/rules.yaml" >&2; exit 2; }
	$(CLI) rules "$$PATH_TO_RULES"

rules_show: $(LIGHT) ## print the active merchandising rules
	@$(CLI) rules-show

rules_schema: $(LIGHT) ## print the JSON Schema of a rules file for editors (OUT=file writes it there)
	@$(CLI) rules-schema $${OUT:+--out "$$OUT"}

export: $(LIGHT) ## every item's top N complements: OUT= [N=10] [FORMAT=csv|jsonl|parquet]; or BASKETS=file.jsonl OUT= [RESUME=1]
	@test -n "$$OUT" || { echo "error: give the output file: make export OUT=fbt.csv (or BASKETS=baskets.jsonl OUT=answers.jsonl)" >&2; exit 2; }
	@$(CLI) export --out "$$OUT" --n "$${N:-10}" $${FORMAT:+--format "$$FORMAT"} $${BASKETS:+--baskets "$$BASKETS"} $(if $(RESUME),--resume)

evaluate: $(STAMP) ## score the product against baselines: PATH_TO_DATA= [DAYS=30] [SEED=0: which item is hidden] (report under reports/)
	@test -n "$$PATH_TO_DATA" || { echo "error: give the data file: make evaluate PATH_TO_DATA=path/to/file.csv" >&2; exit 2; }
	$(CLI) evaluate "$$PATH_TO_DATA" --days "$(DAYS)" --engine "$(ENGINE)" --seed "$(SEED)"

events_compact: $(LIGHT) ## compact the recorded events (POST /events) into Parquet by day under events/parquet/, duplicates dropped
	@$(CLI) events-compact

events_report: $(CHARTS) ## compact, then per day and model version: views, clicks, CTR, add-to-carts, purchases, attributed revenue [SINCE=YYYY-MM-DD]
	@$(CLI) events-report $${SINCE:+--since "$$SINCE"}

experiment: $(LIGHT) ## start an experiment: NAME= ARMS='control=popular:10,a=active:45,b=version:<id>:45' (kinds: popular, active, staged, version:<id>) [WINDOW_HOURS=24]
	@test -n "$$NAME" -a -n "$$ARMS" || { echo "error: give the name and the arms: make experiment NAME=new-model ARMS='control=popular:10,a=active:90'" >&2; exit 2; }
	@$(CLI) experiment "$$NAME" "$$ARMS" $${WINDOW_HOURS:+--window-hours "$$WINDOW_HOURS"}

experiments: $(LIGHT) ## list the running experiment and the past ones, with their arms
	@$(CLI) experiments

experiment_stop: $(LIGHT) ## stop the running experiment: NAME= (serving returns to the active model within MODEL_POLL_SECONDS)
	@test -n "$$NAME" || { echo "error: give the experiment's name: make experiment_stop NAME=... (make experiments lists it)" >&2; exit 2; }
	@$(CLI) experiment-stop "$$NAME"

report: $(CHARTS) ## what the recommendations sell, per arm vs control with intervals: [EXPERIMENT=] [FROM= TO=] [OUT=report.html]
	@$(CLI) report $${EXPERIMENT:+--experiment "$$EXPERIMENT"} $${FROM:+--from "$$FROM"} $${TO:+--to "$$TO"} --out "$${OUT:-report.html}"

simulate_shop: $(LIGHT) ## drive the running server as a shop would, then check the report: API_KEY= (or USER_NAME= PASSWORD=) [SESSIONS=20000] [PATH_TO_DATA=]
	@$(CLI) simulate-shop --sessions "$${SESSIONS:-20000}" $${PATH_TO_DATA:+--data "$$PATH_TO_DATA"} --out "$${OUT:-report.html}" $${SEED:+--seed "$$SEED"} $${DROP_ARM:+--drop-arm "$$DROP_ARM" --drop-share "$${DROP_SHARE:-0.5}"}

generate: $(LIGHT) ## write the synthetic dataset to OUT (default data/synthetic.csv; PRESET=tiny|default|scale)
	$(CLI) generate "$${OUT:-data/synthetic.csv}" --preset "$${PRESET:-default}"

# The feed targets' earlier names, still working but not listed: catalog (with PATH_TO_CATALOG= as well as
# PATH_TO_FEED=), catalog_show, catalog_rollback.
catalog: feed
catalog_show: feed_show
catalog_rollback: feed_rollback

##@ Operating it: users, API keys, versions, the background server, AWS

add_user: $(LIGHT) ## add an API user: USER_NAME= PASSWORD= FULL_NAME= EMAIL= ROLE=admin|merchandiser|viewer (no PASSWORD: prompt)
	@test -n "$$USER_NAME" || { echo "error: give the user name: make add_user USER_NAME=... PASSWORD=..." >&2; exit 2; }
	@$(CLI) add-user "$$USER_NAME" --full-name "$$FULL_NAME" --email "$$EMAIL" --role "$${ROLE:-admin}" $${PASSWORD+--password-env PASSWORD}

set_role: $(LIGHT) ## give an API user another role: USER_NAME= ROLE=admin|merchandiser|viewer
	@test -n "$$USER_NAME" -a -n "$$ROLE" || { echo "error: give the user and role: make set_role USER_NAME=... ROLE=merchandiser" >&2; exit 2; }
	@$(CLI) set-role "$$USER_NAME" "$$ROLE"

passwd: $(LIGHT) ## change an API user's password and revoke their earlier tokens: USER_NAME= [PASSWORD=] (no PASSWORD: prompt)
	@test -n "$$USER_NAME" || { echo "error: give the user name: make passwd USER_NAME=..." >&2; exit 2; }
	@$(CLI) passwd "$$USER_NAME" $${PASSWORD+--password-env PASSWORD}

del_user: $(LIGHT) ## delete an API user: USER_NAME=
	@test -n "$$USER_NAME" || { echo "error: give the user name: make del_user USER_NAME=..." >&2; exit 2; }
	@$(CLI) del-user "$$USER_NAME"

list_users: $(LIGHT) ## list API users
	@$(CLI) list-users

add_key: $(LIGHT) ## add an API key, printed once: NAME= [SCOPES=recommend,events] [ORIGINS=https://shop.example.com] [RATE=50]
	@test -n "$$NAME" || { echo "error: give the key's name: make add_key NAME=shop-web SCOPES=recommend ORIGINS=https://..." >&2; exit 2; }
	@$(CLI) add-key "$$NAME" --scopes "$${SCOPES:-recommend}" --origins "$$ORIGINS" $${RATE:+--rate "$$RATE"}

keys: $(LIGHT) ## list API keys: name, scopes, origins, rate, created, last used (never the key)
	@$(CLI) keys

revoke_key: $(LIGHT) ## revoke an API key: NAME= (serving refuses it within MODEL_POLL_SECONDS)
	@test -n "$$NAME" || { echo "error: give the key's name: make revoke_key NAME=..." >&2; exit 2; }
	@$(CLI) revoke-key "$$NAME"

new_secret: $(LIGHT) ## make the token signing secret a storage lacks (REPLACE=1: replace it; earlier tokens stop working)
	@$(CLI) new-secret $(if $(REPLACE),--replace)

run-prod: $(LIGHT) ## serve the API in the background (pid file and log under data/run/)
	@$(CLI) start

kill: $(LIGHT) ## stop the background server started by run-prod
	@$(CLI) stop

status: $(LIGHT) ## say whether the background server runs and which model it serves
	@$(CLI) status

versions: $(LIGHT) ## list model versions: active/staged, training file, its dates, rows, products, held-out HR@10, engine
	$(CLI) versions

activate: $(LIGHT) ## activate model version VERSION= (or a unique beginning of it) if it passes the comparison with the active one (FORCE=1: even if not)
	@test -n "$$VERSION" || { echo "error: give the version: make activate VERSION=... (make versions lists them)" >&2; exit 2; }
	$(CLI) activate "$$VERSION" $(FORCE_FLAG)

rollback: $(LIGHT) ## re-activate the model that was active before the current one
	$(CLI) rollback

feed_rollback: $(LIGHT) ## re-activate the product feed that was active before
	$(CLI) feed-rollback

rules_rollback: $(LIGHT) ## re-activate the rules that were active before
	$(CLI) rules-rollback

SAM ?= sam
NEED_SAM = @command -v $(SAM) >/dev/null || { echo "error: the AWS SAM CLI is not installed: see https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html (or pip install aws-sam-cli)" >&2; exit 2; }

# SNAPSTART=1: for RecommendSnapStart=true (python3.12, Amazon Linux 2023): the layer built in the python3.12 image;
# the check against Amazon Linux 2 and the local 3.11 smoke test do not apply to it.
build-lambda: $(LIGHT) ## build functions and layer for Lambda in the SAM build container (sam build --use-container; needs Docker; SNAPSTART=1: for python3.12)
	$(NEED_SAM)
	$(SAM) build --use-container --container-env-var-file infra/container-env.json $(if $(SNAPSTART),--build-image SharedLayer=public.ecr.aws/sam/build-python3.12 --parameter-overrides RecommendSnapStart=true)
	$(if $(SNAPSTART),@echo "built for python3.12: deploy with RecommendSnapStart=true (make deploy GUIDED=1)",$(BIN)/python infra/build_lambda.py --check-build)

build-lambda-pip: $(LIGHT) ## build functions and layer for Lambda without Docker (manylinux wheels; ANNOY_WHEEL= optional)
	$(BIN)/python infra/build_lambda.py $(if $(ANNOY_WHEEL),--annoy-wheel "$(ANNOY_WHEEL)")

deploy: ## deploy the last build with sam deploy (--guided the first time or with GUIDED=1; answers kept in samconfig.toml)
	$(NEED_SAM)
	@test -f .aws-sam/build/template.yaml || { echo "error: nothing built yet: make build-lambda (or make build-lambda-pip) first" >&2; exit 2; }
	@if [ -n "$(GUIDED)" ] || ! grep -qE '^region *=' samconfig.toml; then \
		$(SAM) deploy --guided --template-file .aws-sam/build/template.yaml; \
	else \
		$(SAM) deploy --template-file .aws-sam/build/template.yaml; \
	fi

emulate-s3: $(STAMP) ## run a local S3 (moto) on 127.0.0.1 in the background; prints the STORAGE_URL/AWS_ENDPOINT_URL to use
	@$(CLI) emulate-s3

emulate-s3-stop: $(LIGHT) ## stop the local S3 started by emulate-s3 (by its pid; its content is lost)
	@$(CLI) emulate-s3-stop

##@ Developing it: install, test, lint, docs, benchmarks

devel: $(STAMP) ## create .venv and install everything: the project, every extra, the test and docs tools
	@echo "installed into $(VENV)"

# The project's own modules compiled first: when PYTHONDONTWRITEBYTECODE is set (the shared machines set it), each
# of the suite's hundreds of subprocesses (make targets, the CLI, servers, the guide's blocks) compiles them again.
test: $(STAMP) lint ## run the lint checks, then the test suite (the guide's build and runnable examples included)
	@$(BIN)/python -m compileall -q shared functions bench >/dev/null
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff's lint and format checks (configured in pyproject.toml; `ruff format .` fixes the format)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-template: $(STAMP) ## check template.yaml with cfn-lint (make test does it too)
	$(BIN)/cfn-lint template.yaml

browser-deps: ## install chromium (Debian's package) for the web console's browser tests when it is missing
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y chromium || { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; }

# The user guide (docs/, mkdocs.yml): built strictly (a broken link or a missing page fails); tests/test_docs.py
# builds it too and runs its runnable blocks, so `make test` covers both.
.PHONY: docs docs-examples
docs: $(STAMP) ## build the user guide into site/ (strict: broken links and missing pages fail)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

docs-examples: $(STAMP) ## run the guide's runnable blocks and rewrite the example outputs they produce (docs/examples/)
	$(BIN)/python tests/docs_runner.py --write

clean: ## remove the venv and caches (data/ is kept)
	rm -rf $(VENV) .pytest_cache shared/*.egg-info site

# Benchmarks: separate from `make test`, never timed assertions. They run the harness in bench/ (not installed:
# `python -m bench <part>` from this folder). QUICK=1 gives short runs that check the harness (results then go to
# bench/results/quick/). The Online Retail files come from BENCH_DATA_DIR (default data/datasets/).
BENCH := $(BIN)/python -m bench
BENCH_FLAGS = $(if $(QUICK),--quick)
export BENCH_DATA_DIR

bench: $(STAMP) bench-deps ## run every benchmark, print one table, write bench/results/latest.{md,json} (QUICK=1: short; BENCH_DATA_DIR=folder of Online Retail)
	$(BENCH) all $(BENCH_FLAGS)

bench-train: $(STAMP) ## benchmark training on Online Retail csv.gz and xlsx (BENCH_DATA_DIR=folder): time and peak RSS per stage
	$(BENCH) train $(BENCH_FLAGS)

bench-serve: $(STAMP) bench-deps ## benchmark POST /send_data over HTTP (wrk) against bare Starlette and FastAPI ceiling apps
	$(BENCH) serve $(BENCH_FLAGS)

bench-cold: $(STAMP) ## benchmark the cold start of the recommend Lambda handler, with the slowest imports
	$(BENCH) cold $(BENCH_FLAGS)

bench-scale: $(STAMP) ## benchmark 10M rows / 100k products: training, index size, latency, HR@10, growth
	$(BENCH) scale $(BENCH_FLAGS)

bench-merch: $(STAMP) ## benchmark merchandising: recommend with feed, 1,000 rules, filters, explain vs plain; make export throughput
	$(BENCH) merch $(BENCH_FLAGS)

bench-logins: $(STAMP) bench-deps ## benchmark /send_data latency while 20 clients send wrong passwords, and logins under a 20-address flood
	$(BENCH) logins $(BENCH_FLAGS)

bench-search: $(STAMP) ## benchmark item search (GET /items) over 100k items
	$(BENCH) search $(BENCH_FLAGS)

bench-widget: $(STAMP) browser-deps ## benchmark the shop widget's first paint of recommendations on the demo shop (headless Chromium)
	$(BENCH) widget $(BENCH_FLAGS)

bench-events: $(STAMP) ## benchmark POST /events in batches of 50 to the local store: events/s and p99
	$(BENCH) events $(BENCH_FLAGS)

bench-report: $(STAMP) ## benchmark the analytics report over a month of generated events (100,000 sessions a day)
	$(BENCH) report $(BENCH_FLAGS)

bench-spark: $(STAMP) ## both engines on the 10M-row scale set (local[2]), agreement on Online Retail; BIG_INVOICES=10000000: ~100M rows (DRIVER_MEMORY=8g)
	$(BENCH) spark $(if $(BIG_INVOICES),--big-invoices "$(BIG_INVOICES)") \
		$(if $(DRIVER_MEMORY),--driver-memory "$(DRIVER_MEMORY)")

fuzz: $(STAMP) ## fuzz the whole HTTP API from its OpenAPI schema (schemathesis) for FUZZ_SECONDS (600); figures in bench/results/fuzz.json
	$(BENCH) fuzz --seconds "$${FUZZ_SECONDS:-600}" --out bench/results/fuzz.json

soak: $(STAMP) bench-deps ## soak the local server for DURATION seconds (600) under load and change [PATH_TO_DATA=]; report in bench/results/soak.json
	$(BENCH) soak --duration "$${DURATION:-600}" $${PATH_TO_DATA:+--data "$$PATH_TO_DATA"} --out bench/results/soak.json

bench-deps: ## install wrk (the HTTP load generator) with apt-get when it is missing
	@command -v wrk >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y wrk || { $$SUDO apt-get update && $$SUDO apt-get install -y wrk; }; }
