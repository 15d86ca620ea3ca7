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


def test_rayservice_locks_ray_token_auth_from_a_secret_and_keeps_the_dashboard_off_all_interfaces():
    cluster = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "flux-serve-ray-token"}
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "$(POD_IP)", "KubeRay's default is 0.0.0.0: set it"
    [container] = head["template"]["spec"]["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert "$POD_IP:8265" in probe["exec"]["command"][-1], "the probes must ask where the dashboard listens"
    everything = yaml.safe_dump(cluster)
    assert "0.0.0.0" not in everything
    assert "RAY_AUTH_TOKEN\n" not in everything and "auth_token:" not in everything, "no token in the manifest"
