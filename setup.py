"""hnm_d2: hard negative mining for detectron2's Faster R-CNN."""

from setuptools import find_packages, setup

setup(
    name="hnm_d2",
    version="0.1.0",
    description="Hard negative mining (negative images, OHEM, hard-negative buffer) for detectron2",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.8",
    packages=find_packages(exclude=("tests", "benchmarks")),
    # The review page's template, script and style, inlined into each page written.
    package_data={"hnm_d2.engine": ["review_assets/*"]},
    # detectron2 itself is deliberately not listed: it is not on PyPI under its own name, and
    # users bring their own build (upstream from source, or a registry build such as
    # sal-detectron2), 0.6 or later: the README's Compatibility section gives the suite's result
    # on each, and the private detectron2 names hnm_d2 relies on.
    install_requires=[
        "torch>=1.10",
        "torchvision",
        "fvcore",
        "pycocotools>=2.0.2",
        "PyYAML",  # the YOLO loader reads data.yaml
        "opencv-python-headless",
        "matplotlib",
        "tqdm",
    ],
    extras_require={"test": ["pytest", "hypothesis", "selenium"]},
    entry_points={
        "console_scripts": ["hnm-mine=hnm_d2.mine:main", "hnm-review=hnm_d2.review:main"]
    },
)
