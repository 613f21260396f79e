"""The driver side of training: what runs on your machine to start a job (local mode or SageMaker) and collect its
package. What runs inside the job is the rest of `training/`: train.py, environment.py, tasks/ and the export."""
