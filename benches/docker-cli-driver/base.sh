#!/usr/bin/env bash
# A custom-executor driver built on the Docker CLI, in the style of GitLab's documented
# examples (LXD/libvirt/podman): the baseline ecr-executor is compared against.
CONTAINER_ID="runner-$CUSTOM_ENV_CI_RUNNER_SHORT_TOKEN-project-$CUSTOM_ENV_CI_PROJECT_ID-concurrent-$CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID-$CUSTOM_ENV_CI_JOB_ID"
