from deepfleet.cli._app import app, console


@app.command()
def doctor() -> None:
    """Devices, versions and the backend a job would use on this machine."""
    from rich.table import Table

    from deepfleet.devices import describe_machine

    info = describe_machine()
    table = Table(title="deepfleet doctor", show_header=False)
    table.add_column("what")
    table.add_column("value")
    for key in (
        "python",
        "platform",
        "cpu",
        "cpu_cores",
        "torch",
        "cuda_available",
        "cuda",
        "xpu_available",
        "mps_available",
        "nccl_available",
        "nccl",
        "xccl_available",
        "gloo_available",
        "job_device",
        "job_backend",
    ):
        table.add_row(key, str(info[key]))
    for dev in info["cuda_devices"]:
        table.add_row(
            f"cuda:{dev['index']}",
            f"{dev['name']}, {dev['memory_gib']} GiB, "
            f"compute capability {dev['compute_capability']}",
        )
    if not info["cuda_devices"]:
        table.add_row("cuda devices", "none visible")
    for dev in info["xpu_devices"]:
        table.add_row(f"xpu:{dev['index']}", f"{dev['name']}, {dev['memory_gib']} GiB")
    console.print(table)
