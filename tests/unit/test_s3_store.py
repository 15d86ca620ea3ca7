"""The job store on a real S3-compatible server (moto, on loopback), through s3fs."""

from deployments.contracts import GenerationParams
from serve_apps.history import export_history
from serve_apps.records import JobRecord
from serve_apps.storage import JobStore, new_job_id

KEY_ID = "0123456789ab"


def test_records_images_markers_and_history_on_s3(s3_url, s3_endpoint, tmp_path):
    store = JobStore(s3_url, {"endpoint_url": s3_endpoint})
    other_replica = JobStore(s3_url, {"endpoint_url": s3_endpoint})
    job_id = new_job_id()
    params = GenerationParams(prompt="p", width=64, height=64, steps=4, guidance=None, seed=1)
    record = JobRecord(id=job_id, model="m", key_id=KEY_ID, created_at=1.0, updated_at=1.0, params=params)
    store.save_job(record)
    store.mark_pending(job_id)
    store.add_history(KEY_ID, job_id, 1.0)
    store.save_image(job_id, "0.png", b"png")
    assert other_replica.load_job(job_id) == record
    assert other_replica.pending_job_ids() == [job_id]
    assert other_replica.load_image(job_id, "0.png") == b"png"
    assert not other_replica.is_cancel_requested(job_id)
    store.request_cancel(job_id)
    assert other_replica.is_cancel_requested(job_id), "no stale listing cache across replicas"
    store.clear_pending(job_id)
    assert other_replica.pending_job_ids() == []
    assert other_replica.list_history(KEY_ID, 10) == ([job_id], None)
    assert other_replica.load_job(new_job_id()) is None
    assert export_history(other_replica, tmp_path / "h.parquet") == 1
    assert store.shared_secret("s", lambda: "first") == other_replica.shared_secret("s", lambda: "second") == "first"


def test_denoiser_worker_writes_images_and_progress_to_s3(s3_url, s3_endpoint, encoder):
    """The denoiser deployment's class, in-process, against the loopback S3 server."""
    from serve_apps.config import AppArgs, ModelArgs
    from serve_apps.workers import DenoiserServer

    model = "flux-2-klein-4b"
    args = AppArgs(
        storage_url=s3_url, storage_options={"endpoint_url": s3_endpoint}, models={model: ModelArgs(weights="emulated:tiny")}
    )
    worker = DenoiserServer(args, model)
    job_id = new_job_id()
    params = GenerationParams(prompt="a red circle", width=64, height=64, steps=4, guidance=None, seed=1, num_images=2,
                              output_format="png")
    [outcome] = worker.generate_batch([encoder.job(params, job_id)])
    reader = JobStore(s3_url, {"endpoint_url": s3_endpoint})
    assert outcome.images == ["0.png", "1.png"]
    assert reader.load_image(job_id, "1.png").startswith(b"\x89PNG")
    assert reader.load_progress(job_id)["step"] == 4
