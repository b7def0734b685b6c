"""Helpers shared by the operators, the sensor and the batch package (no Airflow task code here)."""
