"""The KubeRay manifest and serve_config.yaml carry args the builder accepts."""

from pathlib import Path

import yaml

from serve_apps.builder import validate_args

ROOT = Path(__file__).resolve().parents[2]


def test_serve_config_and_rayservice_validate():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    validate_args(config["applications"][0]["args"])
    service = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    assert service["kind"] == "RayService"
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    args = validate_args(serve_config["applications"][0]["args"])
    assert args.storage_url.startswith("s3://")
    assert all(model.autoscaling.min_replicas == 0 for model in args.models.values())
