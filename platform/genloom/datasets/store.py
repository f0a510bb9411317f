"""The dataset store's old single module, kept as re-exports while other branches still import it.

Its contents live in items.py (content-addressed items), versions.py (datasets, versions,
membership) and loading.py (reading versions into tensors). New code imports those.
"""

from genloom.datasets.items import (  # noqa: F401
    EFFECTIVE_LABEL,
    ItemSpec,
    image_item,
    item_sha256,
    label_override,
    label_overrides,
    put_items,
    text_item,
)
from genloom.datasets.loading import Batch, load_split, prefetched, stream_batches  # noqa: F401
from genloom.datasets.versions import (  # noqa: F401
    DataInfo,
    add_members,
    create_version,
    describe_version,
    diff_versions,
    get_dataset,
    label_sort_key,
    list_versions,
    resolve_version,
    seal_version,
    version_ref,
    version_summary,
)
