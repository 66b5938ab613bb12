"""The python3 job wrapper's OpenAPI document and Swagger UI page."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Optional, TypedDict, Union

import pytest
from openapi_spec_validator import validate

from buildpacks.python3.racetrack_job_wrapper.docs_page import swagger_ui_page
from buildpacks.python3.racetrack_job_wrapper.openapi import openapi_document, parameter_schema

PERFORM = "/api/v1/perform"
NULL = {"type": "object", "nullable": True, "enum": [None]}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def document(endpoints: dict[str, Callable[..., Any]], **overrides: Any) -> dict[str, Any]:
    """A document with defaults for everything but the endpoints, validated as OpenAPI 3.0."""
    arguments: dict[str, Any] = {
        "title": "adder",
        "version": "1.2.3",
        "description": "",
        "endpoints": endpoints,
        "examples": {},
        "static_files": [],
        "static_dirs": [],
        "webview": False,
    }
    arguments.update(overrides)
    doc = openapi_document(**arguments)
    validate(doc)
    json.dumps(doc, allow_nan=False)  # plain JSON, as the server will send it
    return doc


def operation(doc: dict[str, Any], path: str = PERFORM) -> dict[str, Any]:
    return doc["paths"][path]["post"]


def body(doc: dict[str, Any], path: str = PERFORM) -> dict[str, Any]:
    return operation(doc, path)["requestBody"]["content"]["application/json"]["schema"]


def result(doc: dict[str, Any], path: str = PERFORM) -> dict[str, Any]:
    return operation(doc, path)["responses"]["200"]["content"]["application/json"]["schema"]


def param_schema(annotation: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema of a single parameter `x: annotation`, and the document's components."""

    class Job:
        def perform(self, x):  # annotation set below, so that any object can be used
            pass

    Job.perform.__annotations__ = {"x": annotation}
    doc = document({PERFORM: Job().perform})
    return body(doc)["properties"]["x"], doc["components"]["schemas"]


# fixtures used by several tests


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Point:
    """A point on the plane."""

    x: float
    y: float = 0.0
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Tree:
    value: int
    children: list[Tree] = dataclasses.field(default_factory=list)
    parent: Optional[Tree] = None  # noqa: UP045 - the typing spelling is under test


class Movie(TypedDict, total=False):
    title: str
    year: int


class Pair(NamedTuple):
    left: int
    right: str


class Weird:
    """A type no schema is known for."""


class RestJob:
    def perform(
        self,
        numbers: list[float],
        scale: int = 2,
        label: str = "sum",
        strict: bool = False,
        *args: Any,
        mode: Color = Color.RED,
    ) -> float:
        """Add the numbers, times a scale.

        Longer text about adding,
        on two lines.

        :param numbers: what to add
            across two lines
        :type numbers: list[float]
        :param int scale: multiplies the sum
        :param label: a name: with a colon
        :returns: the scaled sum
        :rtype: float
        :raises ValueError: when empty
        """
        return sum(numbers) * scale


# signatures and docstrings


def test_perform_with_typed_parameters_defaults_and_rest_docstring():
    doc = document({PERFORM: RestJob().perform})

    assert body(doc) == {
        "type": "object",
        "properties": {
            "numbers": {
                "type": "array",
                "items": {"type": "number"},
                "description": "what to add across two lines",
            },
            "scale": {"type": "integer", "default": 2, "description": "multiplies the sum"},
            "label": {"type": "string", "default": "sum", "description": "a name: with a colon"},
            "strict": {"type": "boolean", "default": False},
            "mode": {"type": "string", "enum": ["red", "green"], "default": "red"},
        },
        "required": ["numbers"],
        "additionalProperties": False,
    }
    op = operation(doc)
    assert op["operationId"] == "perform"
    assert op["tags"] == ["job"]
    assert op["summary"] == "Add the numbers, times a scale."
    assert op["description"] == (
        "Longer text about adding,\non two lines.\n\n:raises ValueError: when empty"
    )
    assert op["requestBody"]["required"] is True
    assert op["responses"]["200"] == {
        "description": "the scaled sum",
        "content": {"application/json": {"schema": {"type": "number"}}},
    }
    assert doc["openapi"] == "3.0.3"
    assert doc["info"] == {"title": "adder", "version": "1.2.3"}
    assert "servers" not in doc


def test_google_style_docstring():
    class Job:
        def perform(self, a: int, b: int = 1, **options: Any) -> dict[str, int]:
            """Add two numbers.

            Details come here.

            Args:
                a (int): the first number,
                    continued here
                b: the second one
                **options: passed along

            Returns:
                dict[str, int]: the sum under "sum"

            Raises:
                ValueError: never
            """
            return {"sum": a + b}

    op = operation(document({PERFORM: Job().perform}))

    assert op["summary"] == "Add two numbers."
    assert op["description"] == "Details come here.\n\nRaises:\n    ValueError: never"
    assert body(document({PERFORM: Job().perform})) == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "the first number, continued here"},
            "b": {"type": "integer", "default": 1, "description": "the second one"},
        },
        "required": ["a"],
        "additionalProperties": True,
    }
    assert op["responses"]["200"]["description"] == 'the sum under "sum"'


def test_numpy_style_docstring():
    class Job:
        def perform(self, x: float, y: float = 0.5) -> float:
            """Interpolate.

            Parameters
            ----------
            x : float
                The start.
            y : float, optional
                The weight.

            Returns
            -------
            float
                The value in between.

            Notes
            -----
            Linear only.
            """
            return x * y

    op = operation(document({PERFORM: Job().perform}))

    assert op["summary"] == "Interpolate."
    assert op["description"] == "Notes\n-----\nLinear only."
    assert body(document({PERFORM: Job().perform}))["properties"] == {
        "x": {"type": "number", "description": "The start."},
        "y": {"type": "number", "default": 0.5, "description": "The weight."},
    }
    assert op["responses"]["200"]["description"] == "The value in between."


def test_kwargs_allow_more_keys_and_positional_only_and_args_are_left_out():
    class Job:
        def perform(self, first, /, *args, second=None, **kwargs):
            pass

    assert body(document({PERFORM: Job().perform})) == {
        "type": "object",
        "properties": {"second": {"default": None}},
        "additionalProperties": True,
    }
    assert operation(document({PERFORM: Job().perform}))["requestBody"]["required"] is False


def test_no_hints_and_no_docstring():
    class Job:
        def perform(self, a, b=2, c=object()):  # noqa: B008
            pass

    doc = document({PERFORM: Job().perform})

    assert body(doc) == {
        "type": "object",
        "properties": {"a": {}, "b": {"default": 2}, "c": {}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert result(doc) == {}
    op = operation(doc)
    assert "summary" not in op
    assert "description" not in op
    assert op["responses"]["200"]["description"] == "Result"


def test_defaults_are_kept_only_when_json_and_of_the_right_type():
    class Job:
        def perform(
            self,
            wrong: int = "seven",  # type: ignore[assignment]
            nan: float = float("nan"),
            pair: tuple[int, int] = (1, 2),
            level: Level = Level.HIGH,
            when: datetime.date = datetime.date(2024, 1, 1),
            choice: int | str = "x",
        ):
            pass

    assert body(document({PERFORM: Job().perform}))["properties"] == {
        "wrong": {"type": "integer"},
        "nan": {"type": "number"},
        "pair": {
            "type": "array",
            "items": {"type": "integer"},
            "minItems": 2,
            "maxItems": 2,
            "default": [1, 2],
        },
        "level": {"type": "integer", "enum": [1, 2], "default": 2},
        "when": {"type": "string", "format": "date"},
        "choice": {"anyOf": [{"type": "integer"}, {"type": "string"}], "default": "x"},
    }


def test_none_default_makes_the_schema_nullable():
    class Job:
        def perform(self, n: int = None, p: Point = None, u: int | str = None):  # noqa: RUF013
            pass

    assert body(document({PERFORM: Job().perform}))["properties"] == {
        "n": {"type": "integer", "nullable": True, "default": None},
        "p": {"anyOf": [{"$ref": "#/components/schemas/Point"}, NULL], "default": None},
        "u": {"anyOf": [{"type": "integer"}, {"type": "string"}, NULL], "default": None},
    }


# type hints


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (str, {"type": "string"}),
        (bool, {"type": "boolean"}),
        (None, NULL),
        (bytes, {"type": "string", "format": "binary"}),
        (Any, {}),
        (datetime.datetime, {"type": "string", "format": "date-time"}),
        (datetime.date, {"type": "string", "format": "date"}),
        (datetime.time, {"type": "string", "format": "time"}),
        (Optional[int], {"type": "integer", "nullable": True}),  # noqa: UP045
        (int | None, {"type": "integer", "nullable": True}),
        (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),  # noqa: UP007
        (int | str | None, {"anyOf": [{"type": "integer"}, {"type": "string"}, NULL]}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2.5], {"type": "number", "enum": [1, 2.5]}),
        (Literal["a", None], {"type": "string", "enum": ["a", None], "nullable": True}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Optional[Literal["a"]], {"type": "string", "enum": ["a", None], "nullable": True}),  # noqa: UP045
        (Color, {"type": "string", "enum": ["red", "green"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (list, {"type": "array", "items": {}}),
        (
            list[dict[str, int]],
            {
                "type": "array",
                "items": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        ),
        (Sequence[str], {"type": "array", "items": {"type": "string"}}),
        (set[int], {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}),
        (frozenset[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (tuple, {"type": "array", "items": {}}),
        (typing.Tuple, {"type": "array", "items": {}}),  # noqa: UP006
        (tuple[()], {"type": "array", "items": {}, "maxItems": 0}),
        (
            tuple[int, str],
            {
                "type": "array",
                "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (
            Pair,
            {
                "type": "array",
                "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "minItems": 2,
                "maxItems": 2,
            },
        ),
        (dict, {"type": "object", "additionalProperties": True}),
        (Mapping[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict[str, Any], {"type": "object", "additionalProperties": {}}),
    ],
)
def test_type_hints(annotation: Any, expected: dict[str, Any]):
    schema, _ = param_schema(annotation)
    assert schema == expected


def test_dataclass_becomes_a_component():
    schema, components = param_schema(list[Point])

    assert schema == {"type": "array", "items": {"$ref": "#/components/schemas/Point"}}
    assert components["Point"] == {
        "type": "object",
        "properties": {
            "x": {"type": "number"},
            "y": {"type": "number", "default": 0.0},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["x"],
        "description": "A point on the plane.",
    }


def test_recursive_dataclass_refers_to_itself():
    schema, components = param_schema(Tree)

    assert schema == {"$ref": "#/components/schemas/Tree"}
    assert components["Tree"] == {
        "type": "object",
        "properties": {
            "value": {"type": "integer"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Tree"}},
            "parent": {"anyOf": [{"$ref": "#/components/schemas/Tree"}, NULL], "default": None},
        },
        "required": ["value"],
    }


def test_optional_recursive_dataclass_parameter():
    schema, components = param_schema(Optional[Tree])  # noqa: UP045 - the same object as the field's

    assert schema == {"anyOf": [{"$ref": "#/components/schemas/Tree"}, NULL]}
    assert components["Tree"]["properties"]["parent"] == {
        "anyOf": [{"$ref": "#/components/schemas/Tree"}, NULL],
        "default": None,
    }


def test_typeddict_becomes_a_component():
    schema, components = param_schema(Movie)

    assert schema == {"$ref": "#/components/schemas/Movie"}
    assert components["Movie"] == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    }


def test_components_of_the_same_name_get_distinct_names():
    def make() -> type:
        @dataclasses.dataclass
        class Point:
            z: str

        return Point

    class Job:
        def perform(self, a, b, c):
            pass

    Job.perform.__annotations__ = {"a": Point, "b": make(), "c": Point}
    doc = document({PERFORM: Job().perform})

    assert body(doc)["properties"] == {
        "a": {"$ref": "#/components/schemas/Point"},
        "b": {"$ref": "#/components/schemas/Point_2"},
        "c": {"$ref": "#/components/schemas/Point"},
    }
    assert doc["components"]["schemas"]["Point_2"]["properties"] == {"z": {"type": "string"}}


def test_description_next_to_a_ref_is_wrapped_in_allof():
    class Job:
        def perform(self, p: Point):
            """Move.

            :param p: where to
            """

    assert body(document({PERFORM: Job().perform}))["properties"]["p"] == {
        "allOf": [{"$ref": "#/components/schemas/Point"}],
        "description": "where to",
    }


def test_pydantic_model_schema_is_used_and_made_openapi_3_0():
    pydantic = pytest.importorskip("pydantic")

    class Item(pydantic.BaseModel):
        """An item."""

        name: str
        price: float = pydantic.Field(gt=0, examples=[9.5])
        note: Optional[str] = None  # noqa: UP045
        child: Optional[Item] = None  # noqa: UP045
        kind: Literal["a"] = "a"
        pair: tuple[int, str] = (1, "x")

    Item.model_rebuild()
    schema, components = param_schema(Item)

    assert schema == {"$ref": "#/components/schemas/Item"}
    item = components["Item"]
    assert item["type"] == "object"
    assert item["description"] == "An item."
    assert item["required"] == ["name", "price"]
    properties = item["properties"]
    assert properties["price"] == {
        "exclusiveMinimum": True,
        "minimum": 0,
        "example": 9.5,
        "title": "Price",
        "type": "number",
    }
    assert properties["note"] == {
        "default": None,
        "title": "Note",
        "type": "string",
        "nullable": True,
    }
    assert properties["child"]["anyOf"] == [{"$ref": "#/components/schemas/Item"}, NULL]
    assert properties["kind"]["enum"] == ["a"]
    assert properties["pair"]["items"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}


def test_model_json_schema_that_fails_or_returns_junk_is_ignored():
    class Broken:
        @classmethod
        def model_json_schema(cls) -> Any:
            raise RuntimeError("no")

    class Junk:
        @classmethod
        def model_json_schema(cls) -> Any:
            return ["not", "a", "dict"]

    assert param_schema(Broken)[0] == {
        "description": f"Python type {__name__}.{Broken.__qualname__}"
    }
    assert param_schema(Junk)[0] == {"description": f"Python type {__name__}.{Junk.__qualname__}"}


def test_unexpected_types_become_any_value_with_a_description():
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    assert param_schema(Weird)[0] == {"description": f"Python type {__name__}.Weird"}
    assert param_schema(Callable[[int], int])[0] == {
        "description": "Python type collections.abc.Callable[[int], int]"
    }
    assert param_schema(42)[0] == {"description": "Python type 42"}
    assert param_schema(Unhashable())[0] == {"description": "Python type unknown"}


def test_unresolvable_string_annotations():
    class Job:
        def perform(self, a: Missing, b: int, c: list[Missing]) -> Missing:  # type: ignore[name-defined]  # noqa: F821
            pass

    doc = document(
        {PERFORM: Job().perform}
    )  # this module uses `from __future__ import annotations`

    assert body(doc)["properties"] == {"a": {}, "b": {"type": "integer"}, "c": {}}
    assert result(doc) == {}


def test_recursive_type_alias_does_not_recurse_forever():
    Json = Union[dict[str, "Json"], list["Json"], str, None]  # noqa: UP007
    schema, _ = param_schema(Json)

    assert schema == {
        "anyOf": [
            {"type": "object", "additionalProperties": {}},
            {"type": "array", "items": {}},
            {"type": "string"},
            NULL,
        ]
    }


def test_return_annotations():
    class Job:
        def perform(self) -> None:
            pass

        def explain(self) -> list[Point]:
            return []

    doc = document({PERFORM: Job().perform, "/api/v1/explain": Job().explain})

    assert result(doc) == NULL
    assert result(doc, "/api/v1/explain") == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Point"},
    }


def test_callables_without_a_signature_get_a_generic_operation():
    class NoSignature:
        @property
        def __signature__(self) -> Any:
            raise RuntimeError("no signature")

        def __call__(self) -> None:
            pass

    doc = document({PERFORM: NoSignature(), "/api/v1/none": None})  # type: ignore[dict-item]

    assert body(doc) == {"type": "object", "additionalProperties": True}
    assert body(doc, "/api/v1/none") == {"type": "object", "additionalProperties": True}
    assert result(doc) == {}


def test_parameter_schema_alone_carries_its_components():
    class Job:
        def perform(self, tree: Tree, k: int = 3):
            pass

    schema = parameter_schema(Job().perform)

    assert schema["properties"] == {
        "tree": {"$ref": "#/components/schemas/Tree"},
        "k": {"type": "integer", "default": 3},
    }
    assert schema["required"] == ["tree"]
    assert set(schema["components"]["schemas"]) == {"Tree"}


# the document around the endpoints


def test_auxiliary_endpoint_with_example():
    class Job:
        def perform(self, x: int) -> int:
            return x

        def explain(self, x: int, depth: int = 1) -> dict[str, Any]:
            """Explain a result."""
            return {}

    job = Job()
    doc = document(
        {PERFORM: job.perform, "/api/v1/explain": job.explain},
        examples={"/api/v1/explain": {"x": 5, "depth": 2}},
        description="Adds numbers.",
    )

    explain = operation(doc, "/api/v1/explain")
    assert explain["operationId"] == "explain"
    assert explain["tags"] == ["job"]
    assert explain["summary"] == "Explain a result."
    assert explain["requestBody"]["content"]["application/json"]["example"] == {
        "x": 5,
        "depth": 2,
    }
    assert "example" not in operation(doc)["requestBody"]["content"]["application/json"]
    assert doc["info"] == {"title": "adder", "version": "1.2.3", "description": "Adds numbers."}


def test_error_responses_refer_to_the_error_schema():
    doc = document({PERFORM: RestJob().perform})
    responses = operation(doc)["responses"]

    assert set(responses) == {"200", "400", "429", "500", "503"}
    for status in ("400", "429", "500", "503"):
        assert responses[status]["content"] == {"application/json": {"schema": ERROR_REF}}
    assert "max_concurrency plus its queue" in responses["429"]["description"]
    assert doc["components"]["schemas"]["Error"] == {
        "type": "object",
        "properties": {
            "error": {"type": "string", "description": "What went wrong"},
            "type": {"type": "string", "description": "Kind of error, e.g. the exception's class"},
        },
        "required": ["error", "type"],
    }


def test_static_files_dirs_and_webview():
    doc = document(
        {PERFORM: RestJob().perform},
        static_files=["/api/v1/xrai", "/api/v1/xrai.png"],
        static_dirs=["/api/v1/assets/"],
        webview=True,
    )
    paths = doc["paths"]
    binary = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    path_parameter = {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}}

    xrai = paths["/api/v1/xrai"]["get"]
    assert xrai["operationId"] == "static_xrai"
    assert xrai["tags"] == ["static"]
    assert xrai["responses"]["200"]["content"] == binary
    assert paths["/api/v1/xrai.png"]["get"]["operationId"] == "static_xrai_png"

    assets = paths["/api/v1/assets/{path}"]["get"]
    assert assets["operationId"] == "static_assets"
    assert assets["tags"] == ["static"]
    assert [{k: v for k, v in p.items() if k != "description"} for p in assets["parameters"]] == [
        path_parameter
    ]
    assert assets["responses"]["200"]["content"] == binary

    webview = paths["/api/v1/webview/{path}"]["get"]
    assert webview["operationId"] == "webview"
    assert webview["tags"] == ["webview"]
    assert webview["summary"] == "The job's own web UI"
    assert [{k: v for k, v in p.items() if k != "description"} for p in webview["parameters"]] == [
        path_parameter
    ]
    assert [tag["name"] for tag in doc["tags"]] == ["job", "static", "webview", "platform"]


def test_without_static_paths_or_webview():
    doc = document({PERFORM: RestJob().perform})

    assert list(doc["paths"]) == [PERFORM, "/live", "/ready", "/health", "/metrics"]
    assert [tag["name"] for tag in doc["tags"]] == ["job", "platform"]


def test_platform_endpoints():
    paths = document({PERFORM: RestJob().perform})["paths"]

    for path in ("/live", "/ready", "/health"):
        get = paths[path]["get"]
        assert get["tags"] == ["platform"]
        assert get["operationId"] == path[1:]
        assert all(set(r["content"]) == {"application/json"} for r in get["responses"].values())
    assert paths["/ready"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "properties"
    ]["ready"] == {"type": "boolean"}
    metrics = paths["/metrics"]["get"]
    assert metrics["tags"] == ["platform"]
    assert metrics["responses"]["200"]["content"] == {"text/plain": {"schema": {"type": "string"}}}


def test_operation_ids_are_unique_and_stable():
    class Job:
        def perform(self):
            pass

    job = Job()
    endpoints = {
        PERFORM: job.perform,
        "/api/v1/live": job.perform,
        "/api/v1/models/predict": job.perform,
        "/api/v1/models-predict": job.perform,
    }
    doc = document(endpoints, static_files=["/api/v1/perform"])

    assert [operation(doc, path)["operationId"] for path in endpoints] == [
        "perform",
        "live",
        "models_predict",
        "models_predict_2",
    ]
    assert doc["paths"][PERFORM]["get"]["operationId"] == "static_perform"
    assert doc["paths"]["/live"]["get"]["operationId"] == "live_2"
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert document(endpoints, static_files=["/api/v1/perform"]) == doc


# the Swagger UI page


def test_swagger_ui_page_is_self_contained_and_relative():
    page = swagger_ui_page(
        title="adder <v1> & co",
        openapi_url="openapi.json</script>",
        assets_url="docs/assets",
    )

    assert "<title>adder &lt;v1&gt; &amp; co</title>" in page
    assert 'href="docs/assets/swagger-ui.css"' in page
    assert 'src="docs/assets/swagger-ui-bundle.js"' in page
    assert 'href="docs/assets/favicon-32x32.png"' in page
    assert 'url: "openapi.json\\u003c/script\\u003e"' in page
    assert page.count("</script>") == 2
    assert "validatorUrl: null" in page
    assert 'dom_id: "#swagger-ui"' in page
    assert "deepLinking: true" in page
    assert "presets: [SwaggerUIBundle.presets.apis]" in page
    assert 'layout: "BaseLayout"' in page
    assert not re.search(r"https?://", page)
    assert not re.search(r'(href|src)="/', page)


def test_swagger_ui_page_with_trailing_slash():
    page = swagger_ui_page(title="t", openapi_url="../openapi.json", assets_url="assets/")

    assert 'href="assets/swagger-ui.css"' in page
    assert 'url: "../openapi.json"' in page
