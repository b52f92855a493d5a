.PHONY: setup app test checkpoints bench
setup:
	bash scripts/setup.sh
app:
	bash scripts/app.sh
test:
	bash scripts/test.sh
checkpoints:
	bash scripts/make_checkpoints.sh
bench:
	.venv/bin/python -m dld_core bench --checkpoint checkpoints/teacher --json results/bench.json
