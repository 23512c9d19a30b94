"""``python -m xent_fast``: the build configuration, then the seeds' worked examples."""

from ._config import show_config
from ._demo import print_seed_examples


def main() -> None:
    show_config()
    print()
    print_seed_examples()


if __name__ == "__main__":
    main()
