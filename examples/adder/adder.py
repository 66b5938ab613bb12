class AdderModel:
    def perform(self, numbers: list[float]) -> float:
        """Add up the numbers."""
        return sum(numbers)

    def docs_input_example(self) -> dict:
        return {"numbers": [40, 2]}
