"""Model versions: the packages on disk, the SageMaker Model Registry of record, the version lock deploys ship, and
`python -m registry` (versions, show, diff, promote, rollback)."""
