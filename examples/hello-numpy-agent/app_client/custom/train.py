"""hello-numpy-agent training script: a separate process that adds 1 to every weight."""

import cellnet.client as flare


def main() -> None:
    flare.init()
    site = flare.get_site_name()
    while flare.is_running():
        model = flare.receive()
        params = {name: value + 1.0 for name, value in model.params.items()}
        print(f"{site}: round {model.current_round + 1}/{model.total_rounds} trained", flush=True)
        flare.send(params, metrics={"mean": float(params["w"].mean())}, num_steps=1)


if __name__ == "__main__":
    main()
