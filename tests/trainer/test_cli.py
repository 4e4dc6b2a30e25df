import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from trainer import cli
from trainer.intent_trainer import METHODS


def test_methods_match_the_trainer() -> None:
    assert cli.METHODS == METHODS


def test_help_does_not_import_torch() -> None:
    code = "import sys; from trainer.cli import train; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_intent_command_trains_and_saves(tmp_path: Path, tiny_model_dir: Path, make_examples) -> None:  # type: ignore[no-untyped-def]
    rows = [{"id": str(i), "text": e.text, "intent": e.label, "domain": e.domain}
            for i, e in enumerate(make_examples("kitchen", 8) + make_examples("tools", 8))]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(cli.train, ["intent", "--data", str(data), "--target", "kitchen", "--k", "3",
                                            "--test-per-label", "2", "--model", str(tiny_model_dir),
                                            "--method", "finetune", "--head-steps", "10", "--adapt-steps",
                                            "2", "--output", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["phases"] == ["head", "finetune"] and "accuracy" in payload["metrics"]
    assert payload["own_encoder"] is True and "search.intent_model" in payload["use"]
    assert (tmp_path / "out" / "heads.safetensors").is_file()
    assert (tmp_path / "out" / "encoder" / "README.md").is_file()


def test_intent_data_and_intent_make_the_model_search_loads(tmp_path: Path) -> None:
    from ranker.intent import LABELS, load_intent_model

    clinc = tmp_path / "clinc.jsonl"
    clinc.write_text("".join(json.dumps({"id": f"c{i}", "text": t, "intent": "order_status", "domain": "shopping",
                                         "split": s}) + "\n"
                             for i, (t, s) in enumerate([("where is my order", "train"), ("track my package", "train"),
                                                         ("is my order late", "test")])))
    wands = tmp_path / "wands.jsonl"
    wands.write_text("".join(json.dumps({"id": f"w{i}", "text": t, "category": c}) + "\n" for i, (t, c) in enumerate(
        [("blue velvet sofa", "Sofas"), ("oak desk", "Desks"), ("floor lamp", "Lamps"), ("5x8 area rug", "Rugs"),
         ("bar stool", "Stools"), ("bunk bed", "Beds"), ("leather armchair", "Armchairs"), ("wall clock", "Clocks")])))
    out = tmp_path / "intents.jsonl"
    result = CliRunner().invoke(cli.train, ["intent-data", "--clinc", str(clinc), "--wands", str(wands),
                                            "--output", str(out), "--json"])
    assert result.exit_code == 0, result.output
    labels = {json.loads(line)["intent"] for line in out.read_text().splitlines()}
    assert {"service", "product_information", "comparison"} <= labels <= set(LABELS)
    assert json.loads((tmp_path / "intents.jsonl.sources.json").read_text())["clinc150"] == str(clinc)
    result = CliRunner().invoke(cli.train, ["intent", "--data", str(out), "--model", "hash:32", "--head-steps", "20",
                                            "--test-per-label", "1", "--output", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    model = load_intent_model(tmp_path / "m")
    assert model.encoder.model_id == "hash:32" and "clinc" in model.card.data[0]


def test_bad_target_is_a_clear_error(tmp_path: Path, make_examples) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "text": e.text, "intent": e.label, "domain": e.domain}) + "\n"
                            for i, e in enumerate(make_examples())))
    result = CliRunner().invoke(cli.train, ["intent", "--data", str(data), "--target", "nope",
                                            "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "known domains: kitchen" in result.output


def test_train_encoder_reads_the_catalog_as_the_indexer_does(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A catalog `shopfusion index` accepts with rejects trains too: the rejects go to a file, not a traceback."""
    rows = [{"id": f"p{i}", "title": f"green tea {i}", "brand": "tetley"} for i in range(6)]
    rows += [{"title": "no id"}, {"id": "x", "title": ""}, "not an object"]
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "text": f"tea {i}"}) + "\n" for i in range(3)))
    (tmp_path / "j.tsv").write_text("query_id\tproduct_id\tgrade\n" + "".join(f"q{i}\tp{i}\t3\n" for i in range(3)))
    result = CliRunner().invoke(cli.train, ["encoder", "--catalog", str(catalog), "--queries", str(tmp_path / "q.jsonl"),
                                            "--qrels", str(tmp_path / "j.tsv"), "--base", str(tiny_model_dir),
                                            "--steps", "1", "--batch-size", "2", "--output", str(tmp_path / "enc"),
                                            "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["catalog"] == {"products": 6, "rejected": 4, "rejects": str(tmp_path / "enc" / "rejects.jsonl")}
    assert len((tmp_path / "enc" / "rejects.jsonl").read_text().splitlines()) == 4
    from shopfusion.artifacts import read_card

    card = read_card(tmp_path / "enc", "encoder")
    assert card.encoder is not None and card.extra["embeds"] == "Product.embedding_text()"


def test_train_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.train, ["intent", "--data", str(tmp_path / "missing.jsonl"), "--output",
                                            str(tmp_path / "o")])
    assert result.exit_code == 2 and "no such file" in result.output and "Traceback" not in result.output
