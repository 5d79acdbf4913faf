"""What runs the pipeline: the functions the Airflow DAGs call (orchestrate), the training launchers (local,
Kubernetes, Slurm), failure alerts, and the task policy the DAG files share. Nothing heavy at import."""
