-- The MLflow tracking and registry database next to Airflow's (the Postgres image creates `airflow`).
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
