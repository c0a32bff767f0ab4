"""The data scientist's side: one training run (training.pipeline.run_training) of plain stage functions,
load → validate → prepare → fit → evaluate → convert → gate → publish → self-test → promote.

No AWS in here: reading s3:// data and writing to the model store go through `sklambda`, which is shared with
the Lambda functions. Run it with `python -m training --help`.
"""
