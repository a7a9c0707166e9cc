# One image for three jobs: Dataflow workers (--sdk_container_image), the Dataflow Flex Template launcher,
# and the SDK harness of a Flink cluster (--environment_type=DOCKER --environment_config=<this image>).
# The Beam SDK image's version and Python must match setup.py's apache-beam pin (checked by
# tests/unit/test_packaging.py); the install step is the same `pip install` CI runs (without the test extra).
# The Flex Template launcher, pinned by tag (Google's dated releases, YYYYMMDD_RC00; the newest its "Flex
# Templates base images" page listed when this was written): build with --build-arg LAUNCHER_TAG=... to move.
ARG LAUNCHER_TAG=20260122_RC00
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${LAUNCHER_TAG} AS launcher

FROM apache/beam_python3.11_sdk:2.77.0

# The launcher, so this image can also launch the job (Dataflow's documented pattern for templates that
# run on a custom SDK container).
COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /opt/beamhouse
COPY setup.py pyproject.toml README.md LICENSE constraints.txt ./
COPY pipelines pipelines
COPY transforms transforms
# The versions CI resolved when constraints.txt was made: a rebuild months later installs the same.
RUN pip install --no-cache-dir -c constraints.txt .

ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/beamhouse/pipelines/deliver.py
ENV PYTHONUNBUFFERED=1
# Two malloc arenas instead of up to 8 per core: the harness's gRPC and bundle threads each keep freed
# memory in their own (see limit_malloc_arenas in pipelines/memory.py for what it measured).
ENV MALLOC_ARENA_MAX=2
# Arrow's jemalloc pool instead of pyarrow's default mimalloc, which keeps freed batches
# (see lean_arrow_pool in pipelines/memory.py).
ENV ARROW_DEFAULT_MEMORY_POOL=jemalloc
# One jemalloc arena instead of one per thread: the harness runs bundles on whichever thread is free, and
# each thread's arena kept what its bundles had freed (see lean_arrow_pool in pipelines/memory.py).
ENV JE_ARROW_MALLOC_CONF=narenas:1

# Workers and harnesses start through Beam's boot script (the SDK image's own entry point).
ENTRYPOINT ["/opt/apache/beam/boot"]
