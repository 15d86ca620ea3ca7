"""The job store on a real S3-compatible server (moto, on loopback), through s3fs."""

import time

from deployments.contracts import GenerationParams
from serve_apps.store.storage import JobStore, new_job_id


def test_images_uploads_references_and_secrets_on_s3(s3_url, s3_endpoint):
    store = JobStore(s3_url, {"endpoint_url": s3_endpoint})
    other_replica = JobStore(s3_url, {"endpoint_url": s3_endpoint})
    job_id = new_job_id()
    store.save_image(job_id, "0.png", b"png")
    assert other_replica.load_image(job_id, "0.png") == b"png"
    assert other_replica.load_image(new_job_id(), "0.png") is None
    assert store.shared_secret("s", lambda: "first") == other_replica.shared_secret("s", lambda: "second") == "first"
    upload = ("0123456789ab", "upload_" + "b" * 32)
    store.save_upload(*upload, b"png")
    assert other_replica.delete_uploads_before(time.time() - 3600) == 0, "S3's LastModified read as a time"
    assert other_replica.delete_uploads_before(time.time() + 3600) == 1 and store.load_upload(*upload) is None
    reference = "c" * 64 + ".png"
    store.save_reference(reference, b"png")
    assert other_replica.references_written_before(time.time() - 3600) == []
    assert other_replica.references_written_before(time.time() + 3600) == [reference]
    other_replica.delete_reference(reference)
    assert store.load_reference(reference) is None


def test_denoiser_worker_writes_images_to_s3_and_progress_to_the_live_channel(s3_url, s3_endpoint, encoder):
    """The denoiser deployment's class, in-process, against the loopback S3 server."""
    from serve_apps.config import AppArgs, ModelArgs
    from serve_apps.live import InProcessChannel
    from serve_apps.workers import DenoiserServer

    model = "flux-2-klein-4b"
    args = AppArgs(
        storage_url=s3_url,
        storage_options={"endpoint_url": s3_endpoint},
        models={model: ModelArgs(weights="emulated:tiny")},
    )
    channel = InProcessChannel()
    worker = DenoiserServer(args, model, channel=channel)
    job_id = new_job_id()
    params = GenerationParams(
        prompt="a red circle", width=64, height=64, steps=4, guidance=None, seed=1, num_images=2, output_format="png"
    )
    [outcome] = worker.generate_batch([encoder.job(params, job_id)])
    reader = JobStore(s3_url, {"endpoint_url": s3_endpoint})
    assert outcome.images == ["0.png", "1.png"]
    assert reader.load_image(job_id, "1.png").startswith(b"\x89PNG")
    progress = channel.state.progress(job_id)
    assert (progress.step, progress.of) == (4, 4) and progress.eta_s == 0.0
    files = reader.fs.find(f"{reader.root}/jobs/{job_id}")
    assert files and all("/images/" in path for path in files), "images only: no progress or marker files"


def test_a_failing_live_channel_never_fails_the_batch(tmp_path, encoder):
    """Progress and cancel are best effort: the images still come back."""
    from concurrent.futures import Future

    from serve_apps.config import AppArgs, ModelArgs
    from serve_apps.live import InProcessChannel
    from serve_apps.workers import DenoiserServer

    class BrokenChannel(InProcessChannel):
        def send(self, progress):
            raise ConnectionError("the channel is down")

        def ask_cancelled(self, job_ids):
            answer = Future()
            answer.set_exception(ConnectionError("the channel is down"))
            return answer

    model = "flux-2-klein-4b"
    worker = DenoiserServer(
        AppArgs(storage_url=str(tmp_path), models={model: ModelArgs(weights="emulated:tiny")}),
        model,
        channel=BrokenChannel(),
    )
    params = GenerationParams(prompt="a red circle", width=64, height=64, steps=4, guidance=None, seed=1)
    [outcome] = worker.generate_batch([encoder.job(params, new_job_id())])
    assert outcome.images == ["0.jpeg"] and not outcome.cancelled
