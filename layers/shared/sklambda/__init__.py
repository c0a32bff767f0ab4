"""Shared code for training and serving: the model store, the data contract, the serving runtimes.

Ships as a Lambda layer (layers/shared) and installs on a laptop with the project. Imports no AWS SDK at
module level: only `sklambda.aws` touches boto3, and only when an s3:// location is used.
"""
