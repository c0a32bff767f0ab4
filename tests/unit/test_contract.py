"""The data contract: strict validation of what a client sends, with every problem named by row and field."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from sklambda.contract import MISSING_CATEGORY, ContractViolation, DataContract, Problem, canonical_category
from sklambda.contract_derivation import canonical_categories, category_counts, derive_contract, encode_frame
from sklambda.request_validation import RequestValidator, columns_from_records

pytestmark = pytest.mark.unit


@pytest.fixture
def contract() -> DataContract:
    frame = pd.DataFrame(
        {
            "mass": [3750.0, 3800.0, None, 4100.0],
            "year": [2007, 2008, 2009, 2007],
            "island": ["Biscoe", "Dream", "Dream", "Torgersen"],
            "sex": ["male", None, "female", "male"],
        }
    )
    return derive_contract(
        frame, numeric=["mass", "year"], categorical=["island", "sex"], target="species", task="classification"
    )


def row(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {"mass": 4000.0, "year": 2008, "island": "Dream", "sex": "female"}
    values.update(overrides)
    return values


def problems_of(rows: object, contract: DataContract) -> list[tuple[int | None, str | None, str]]:
    with pytest.raises(ContractViolation) as caught:
        columns_from_records(rows, contract)
    return [(problem.row, problem.field, problem.message) for problem in caught.value.problems]


def test_derived_contract_records_types_categories_nullability_and_ranges(contract: DataContract) -> None:
    mass, year, island, sex = contract.features
    assert (mass.kind, mass.nullable, mass.minimum, mass.maximum) == ("numeric", True, 3750.0, 4100.0)
    assert (year.nullable, year.minimum, year.maximum) == (False, 2007.0, 2009.0)
    assert (island.kind, island.value_type, island.categories) == (
        "categorical",
        "string",
        ["Biscoe", "Dream", "Torgersen"],
    )
    assert (sex.nullable, sex.categories) == (True, ["female", "male"])


def test_valid_rows_become_model_inputs(contract: DataContract) -> None:
    columns = columns_from_records([row(), row(mass=None, sex=None, year=2009.0)], contract)
    assert columns["mass"].dtype == np.float32
    assert columns["mass"].shape == (2, 1)
    assert np.isnan(columns["mass"][1, 0])
    assert columns["year"].ravel().tolist() == [2008.0, 2009.0]
    assert columns["sex"].ravel().tolist() == ["female", MISSING_CATEGORY]


@pytest.mark.parametrize("count", [1, 3, 40])
def test_the_fast_path_builds_the_blocks_the_checked_path_builds(contract: DataContract, count: int) -> None:
    # Given valid rows (which take the fast path), and the same rows with one null (which take the checked one)
    validator = RequestValidator(contract)
    rows = [row(mass=3800.0 + index, island=("Biscoe", "Dream")[index % 2]) for index in range(count)]
    fast = validator.records(rows)
    checked = validator.records([*rows, row(mass=None)])
    # Then both give one row-major float32 block and one block of category strings, with the same values
    assert fast.numeric is not None
    assert checked.numeric is not None
    assert fast.categorical is not None
    assert checked.categorical is not None
    assert fast.numeric.dtype == checked.numeric.dtype == np.float32
    assert fast.numeric.flags["C_CONTIGUOUS"]
    assert checked.numeric.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(fast.numeric, checked.numeric[:count])
    assert fast.categorical.tolist() == checked.categorical[:count].tolist()
    assert fast.numeric.shape == (count, 2)
    assert fast.categorical.shape == (count, 2)
    # And a field the contract does not know is still refused, and accepted only where allowed
    assert problems_of([row(), row(wings=2)], contract) == [(1, "'wings'", "unknown field")]
    lenient = RequestValidator(contract, allow_unknown_fields=True).records([row(), row(wings=2)])
    np.testing.assert_array_equal(lenient.numeric, validator.records([row(), row()]).numeric)


def test_no_silent_coercion(contract: DataContract) -> None:
    found = problems_of([row(mass="4000"), row(year=True), row(island=3)], contract)
    assert found == [
        (0, "mass", "expected a number, got string '4000'"),
        (1, "year", "expected a number, got boolean True"),
        (2, "island", "expected a string, got number 3"),
    ]


def test_null_only_where_training_saw_nulls(contract: DataContract) -> None:
    assert problems_of([row(year=None), row(island=None)], contract) == [
        (0, "year", "must not be null"),
        (1, "island", "must not be null"),
    ]


def test_missing_and_unknown_fields_are_listed(contract: DataContract) -> None:
    incomplete = row()
    del incomplete["sex"]
    found = problems_of([incomplete, row(colour="red")], contract)
    assert found == [(0, "sex", "missing field"), (1, "'colour'", "unknown field")]


def test_a_missing_field_does_not_hide_the_problems_of_the_values_present(contract: DataContract) -> None:
    # One reply names everything wrong, so a client fixes its request once, not field by field.
    incomplete = row(mass="heavy", island="Atlantis")
    del incomplete["sex"], incomplete["year"]
    found = problems_of([incomplete, row(colour="red", year=None)], contract)
    assert [(r, f, message.split(";")[0]) for r, f, message in found] == [
        (0, "mass", "expected a number, got string 'heavy'"),
        (0, "year", "missing field"),
        (0, "island", "unknown category 'Atlantis'"),
        (0, "sex", "missing field"),
        (1, "'colour'", "unknown field"),
        (1, "year", "must not be null"),
    ]


def test_unknown_fields_allowed_when_contract_says_so(contract: DataContract) -> None:
    relaxed = replace(contract, allow_unknown_fields=True)
    assert set(columns_from_records([row(colour="red")], relaxed)) == {"mass", "year", "island", "sex"}


def test_unknown_category_names_the_allowed_ones(contract: DataContract) -> None:
    ((row_index, field, message),) = problems_of([row(island="Atlantis")], contract)
    assert (row_index, field) == (0, "island")
    assert message == "unknown category 'Atlantis'; allowed: 'Biscoe', 'Dream', 'Torgersen'"


def test_non_finite_and_out_of_range_numbers_are_rejected(contract: DataContract) -> None:
    found = problems_of([row(mass=float("inf")), row(mass=1e300), row(year=10**400)], contract)
    assert [(r, f) for r, f, _ in found] == [(0, "mass"), (1, "mass"), (2, "year")]
    assert all("finite number" in message for _, _, message in found)


def test_shape_errors(contract: DataContract) -> None:
    assert problems_of([], contract) == [(None, None, "expected a non-empty list of objects (one per row)")]
    assert problems_of({"mass": 1}, contract) == [(None, None, "expected a non-empty list of objects (one per row)")]
    assert problems_of([row(), [1, 2]], contract) == [(1, None, "expected an object of feature: value")]


def test_error_messages_echo_only_a_bounded_slice(contract: DataContract) -> None:
    ((_, _, message),) = problems_of([row(island="x" * 10_000)], contract)
    assert len(message) < 200


def test_encode_frame_matches_serving_encoding(contract: DataContract) -> None:
    # The same categorical encoding in training (pandas) and at serving (numpy)
    frame = pd.DataFrame([row(sex=None), row()])
    encoded = encode_frame(frame, contract)
    served = columns_from_records([row(sex=None), row()], contract)
    assert encoded["sex"].tolist() == served["sex"].ravel().tolist() == [MISSING_CATEGORY, "female"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, MISSING_CATEGORY),
        (float("nan"), MISSING_CATEGORY),
        (True, "true"),
        (3, "3"),
        (3.0, "3"),
        (2.5, "2.5"),
        ("a", "a"),
    ],
)
def test_canonical_category(value: object, expected: str) -> None:
    assert canonical_category(value) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["Biscoe", None, "Dream", "Biscoe", float("nan")],
        [1, 2, None, 2],
        [1.0, 2.5, float("nan"), 1.0],
        [True, False, None, True],
        [True, 1, 1.0, False, 0, None],  # equal as keys, different categories
        [None, None],
        ["a", 1, True],
    ],
)
def test_canonical_categories_equal_canonical_category_value_by_value(values: list[object]) -> None:
    # Given a column (object dtype, and the dtype pandas infers)
    for column in (pd.Series(values, dtype=object), pd.Series(values)):
        # When encoding it at once
        encoded = canonical_categories(column)
        # Then every value is encoded as canonical_category encodes it alone, in place
        assert encoded.tolist() == [canonical_category(value) for value in column.tolist()]
        assert encoded.index.equals(column.index)
        assert encoded.dtype == object


@pytest.mark.parametrize(
    "values",
    [
        ["Biscoe", None, "Dream"],
        [1, 2, None],
        [1.0, 2.5, float("nan")],
        [1, 2.5],
        [True, False, None],
        [True, 1, 1.0],
        ["a", 1, True],
        [b"raw", b"bytes"],
        [None, None],
    ],
)
def test_value_type_is_decided_as_value_by_value(values: list[object]) -> None:
    # Given a categorical column (object dtype, and the dtype pandas infers)
    for column in (pd.Series(values, dtype=object), pd.Series(values)):
        # When its contract is derived (the kind of its values inferred by pandas in one pass)
        contract = derive_contract(
            pd.DataFrame({"c": column}), numeric=[], categorical=["c"], target="t", task="classification"
        )
        # Then the value type is the one the present values' Python types give
        kinds = {type(value) for value in column.dropna().tolist()}
        if kinds and kinds <= {bool, np.bool_}:
            expected = "boolean"
        elif kinds and all(issubclass(kind, int | float | np.integer | np.floating) for kind in kinds):
            expected = "number"
        else:
            expected = "string"
        assert contract.features[0].value_type == expected


@pytest.mark.parametrize(
    "values",
    [
        ["Biscoe", None, "Dream", "Biscoe", float("nan"), "Atlantis"],  # text with nulls, one unseen
        [2007, 2008, None, 2008],  # numbers as categories
        [1.0, 2.5, float("nan"), 1.0, 1],
        [True, False, None, True],  # booleans
        [True, 1, 1.0, False, 0, None],  # equal as keys, different categories
        [None, None],
        ["a", 1, True, "a"],
        [],
    ],
)
def test_category_counts_equal_counting_every_row_encoded(values: list[object]) -> None:
    # Given a column (object dtype, the dtype pandas infers, and pandas' string dtype for text)
    columns = [pd.Series(values, dtype=object), pd.Series(values)]
    if all(isinstance(value, str) or value is None or value != value for value in values):
        columns.append(pd.Series(values, dtype="str"))
    for column in columns:
        # When counting its categories once per distinct value
        counts = category_counts(column)
        # Then each category has as many rows as encoding every row gives
        expected = canonical_categories(column).value_counts()
        assert counts.sort_index().to_dict() == expected.sort_index().to_dict()


def test_the_summary_counts_the_other_problems_in_words() -> None:
    one, two, three = (Problem(row=row, field="mass", message="must not be null") for row in range(3))
    assert str(ContractViolation([one])) == "row 0 field 'mass': must not be null"
    assert str(ContractViolation([one, two])).endswith("must not be null (and 1 more problem)")
    assert str(ContractViolation([one, two, three])).endswith("must not be null (and 2 more problems)")
    assert str(ContractViolation([one], total=120)).endswith("(and 119 more problems)")


SINGLE_ROWS_REFUSED = [
    row(year=True),  # bool is not a number (type(True) is bool, a subclass of int)
    row(mass=False),
    row(mass=float("nan")),
    row(mass=float("inf")),
    row(mass=1e19),
    row(year=-(10**19)),
    row(mass="4000"),
    row(year=None),  # not nullable
    row(island=None),
    row(island="Mars"),  # unknown category
    row(island=3),
    row(island=["Dream"]),  # unhashable
    row(sex=True),
    row(wings=2),  # an extra field
    {key: value for key, value in row().items() if key != "sex"},  # a missing one
    {**{key: value for key, value in row().items() if key != "sex"}, "wings": 2},  # as many fields, not the same
    [4000.0, 2008, "Dream", "female"],  # not an object
    "row",
]


@pytest.mark.parametrize("refused", SINGLE_ROWS_REFUSED)
def test_a_single_row_is_refused_as_it_is_among_others(contract: DataContract, refused: object) -> None:
    # Given a bad row alone (the single-row path) and the same row after a good one (the bulk and general paths)
    alone = problems_of([refused], contract)
    among = problems_of([row(), refused], contract)
    # Then both are refused with the same problems, for its row
    assert alone == [(0 if problem_row == 1 else problem_row, field, message) for problem_row, field, message in among]


@pytest.mark.parametrize(
    "single",
    [
        row(),
        row(mass=None, sex=None),  # nulls where training had them
        row(year=2**53 + 2**29 + 1),  # an int that rounds differently if not through float64 first
        row(mass=-1e18, year=10**18),  # the bounds themselves
        row(mass=0.1, year=2009.0),
    ],
)
@pytest.mark.parametrize("number_type", [np.float32, np.float64])
def test_a_single_row_gives_the_blocks_the_general_path_gives(
    contract: DataContract, single: dict[str, object], number_type: type[np.floating]
) -> None:
    # Given one valid row alone (the single-row path) and after a row with a null (the general path)
    validator = RequestValidator(contract, number_type=number_type)
    alone = validator.records([single])
    general = validator.records([row(mass=None), single])
    # Then the blocks are the same: types, shapes, values (NaN for a null) and category strings
    assert alone.numeric is not None
    assert general.numeric is not None
    assert alone.categorical is not None
    assert general.categorical is not None
    assert alone.numeric.dtype == general.numeric.dtype == number_type
    assert alone.numeric.shape == (1, 2)
    assert alone.numeric.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(alone.numeric, general.numeric[1:])
    assert alone.categorical.shape == (1, 2)
    assert alone.categorical.tolist() == general.categorical[1:].tolist()
    assert alone["sex"].ravel().tolist() == [MISSING_CATEGORY if single["sex"] is None else single["sex"]]
    # And an unknown field is accepted where allowed
    lenient = RequestValidator(contract, allow_unknown_fields=True, number_type=number_type).records(
        [{**single, "wings": 2}]
    )
    np.testing.assert_array_equal(lenient.numeric, alone.numeric)


@pytest.mark.parametrize(
    "bad_rows",
    [
        [row(island=["Dream"]), row(island=["Dream"])],  # lists of one length: numpy would make a deeper block
        [row(island=["Dream"]), row(island=["Dream", "Biscoe"])],  # lists of different lengths
        [row(island={"name": "Dream"}), row()],
        [row(sex="Dream"), row()],  # a category of another feature
    ],
)
def test_the_bulk_path_refuses_what_is_not_a_known_category(contract: DataContract, bad_rows: list[object]) -> None:
    # Given several rows with a value that is not one of its feature's category strings
    found = problems_of(bad_rows, contract)
    # Then the request is refused, naming the first row
    assert found
    assert found[0][0] == 0
