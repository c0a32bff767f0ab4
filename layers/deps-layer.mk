# The build rule of a third-party dependency layer, included by layers/<layer>/Makefile after it sets LAYER (the
# template's logical id), SLIM_OPTIONS (.pyc choice) and LAYER_DIR (its own folder). Every step is in
# layers/slim.py (install, slim, compile, report), run by the Python 3.12 that .ci/find-python312 finds
# ($PYTHON, else python3.12 on PATH, which is the one `sam build` found, else pyenv's).

REPO_DIR := $(abspath $(LAYER_DIR)/../..)
SLIM := $(abspath $(LAYER_DIR)/../slim.py)

.PHONY: build-$(LAYER)

build-$(LAYER):
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run this through sam build" >&2; exit 1; }
	@test -f "$(SLIM)" || { echo "$(SLIM) not found (is this a full checkout? sam build --use-container is not supported)" >&2; exit 1; }
	@py=$$("$(REPO_DIR)/.ci/find-python312") || { echo "$(LAYER): no Python 3.12 to run pip and compileall with" >&2; exit 1; }; \
	set -x; \
	rm -rf "$(ARTIFACTS_DIR)/slim-report"; \
	"$$py" "$(SLIM)" "$(ARTIFACTS_DIR)/python" --install --requirements "$(LAYER_DIR)/requirements.txt" \
		--report "$(ARTIFACTS_DIR)/slim-report/$(LAYER).json" $(SLIM_OPTIONS)
