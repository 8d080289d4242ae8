"""Category -> image index over a dataset, used to draw in-context pairs (spec §6.4)."""
from collections import defaultdict

import numpy as np
from detectron2.data.common import DatasetFromList

__all__ = ["CategoryIndex", "record_categories"]


def record_categories(record):
    """Categories of the non-crowd instances/segments of a detectron2 record."""
    items = record.get("annotations", []) + record.get("segments_info", [])
    return {a["category_id"] for a in items if not a.get("iscrowd", 0)}


class CategoryIndex:
    """Which images contain which category, with the records stored compactly.

    Records are serialised (detectron2 ``DatasetFromList(serialize=True)``) so that data-loader
    workers share one compact copy instead of millions of Python objects.
    """

    def __init__(self, name, dataset_dicts):
        cat_to_images = defaultdict(list)
        for i, record in enumerate(dataset_dicts):
            for category in record_categories(record):
                cat_to_images[category].append(i)
        if not cat_to_images:
            raise ValueError(
                f"dataset '{name}' has {len(dataset_dicts)} records but no non-crowd instance: "
                "there is nothing to build reference/target pairs from"
            )
        self.name = name
        self.categories = np.asarray(sorted(cat_to_images))
        self._cat_to_images = {c: np.asarray(v) for c, v in cat_to_images.items()}
        self._records = DatasetFromList(dataset_dicts, copy=True, serialize=True)

    def __len__(self):
        return len(self._records)

    def record(self, i):
        return self._records[i]

    def num_images(self, category):
        return len(self._cat_to_images[category])

    def random_category(self):
        return int(np.random.choice(self.categories))

    def sample_images(self, category, distinct):
        """Indices of a reference and a target image containing ``category``."""
        images = self._cat_to_images[category]
        ref = int(np.random.choice(images))
        if not distinct:
            return ref, ref
        others = images[images != ref]
        return ref, int(np.random.choice(others))
