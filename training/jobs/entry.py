"""The script SageMaker's scikit-learn container runs (hyperparameter sagemaker_program): the job's whole work is
training.sagemaker_job.main, from the packages next to this file in the same sourcedir.tar.gz."""

import sys

from training.sagemaker_job import main

if __name__ == "__main__":
    sys.exit(main())
