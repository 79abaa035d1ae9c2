"""The API's vehicle has one definition, its response Struct (schema.VehicleView,
published as `Vehicle`): every field it names is a column of the inventory view or the
heartbeats table (the view's other columns are its bookkeeping)."""

from __future__ import annotations

from sqlalchemy import MetaData

from muto.cloud.api.schema import components
from muto.cloud.ingest import define_heartbeat_table
from muto.cloud.queries import VEHICLE_COLUMNS
from muto.projections.inventory import Inventory


def test_every_field_of_the_vehicle_is_a_column() -> None:
    metadata = MetaData()
    columns = set(Inventory(metadata).vehicles.c.keys())
    columns |= set(define_heartbeat_table(metadata).c.keys()) - {"vehicle_id"}
    assert set(VEHICLE_COLUMNS.values()) <= columns
    assert len(VEHICLE_COLUMNS) == 19  # every field of VehicleView but `reported`


def test_the_spec_names_the_response_vehicle_not_the_python_class() -> None:
    found = components()
    assert "Vehicle" in found and "VehicleView" not in found
    page = found["VehiclePage"]["properties"]["data"]["items"]["$ref"]
    assert page == "#/components/schemas/Vehicle"
