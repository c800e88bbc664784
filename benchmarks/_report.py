"""What every benchmark does with its finished table: print it, and save it when asked."""
from pathlib import Path


def publish(text: str, out: Path | None) -> None:
    """Print ``text`` (a Markdown table with its notes); write it to ``out`` unless None."""
    print()
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"saved to {out}")
