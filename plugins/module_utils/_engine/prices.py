# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shipped storage price table used by costs.py; users override any entry (option ``prices``).

A Python dict rather than a JSON file: modules run on the managed node from a zip that only
carries Python module_utils. Prices are list prices for the cheapest usual region, in the
provider's currency, as of ``as_of``; docs/costs.md gives each one's source and caveats.

Fields (all optional except ``currency``; absent numbers are 0):

``storage_per_gb_month``  price of one GB stored for a month
``gb_bytes``              bytes in the provider's billing GB (AWS and GCS bill binary GB)
``min_storage_days``      objects deleted earlier are billed as if kept that long
``free_bytes``            bytes stored for free each month (B2's first 10 GB)
``min_billed_bytes``      each month is billed for at least this much (Wasabi's 1 TB)
``flat_per_month``        a fixed price per box of ``capacity_bytes`` (Hetzner Storage Box)
``capacity_bytes``        the size of one box; more data needs more boxes
``put_per_1000``          price of 1000 upload requests (two per backup: artifact and manifest)
``retrieval_per_gb``      price to read a GB back out of an archive class
``egress_per_gb``         price of a GB downloaded to the internet (a restore)
"""
from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

GB = 1000 ** 3
GIB = 1024 ** 3
TB = 1000 ** 4

NUMBER_FIELDS = ('storage_per_gb_month', 'gb_bytes', 'min_storage_days', 'free_bytes', 'min_billed_bytes',
                 'flat_per_month', 'capacity_bytes', 'put_per_1000', 'retrieval_per_gb', 'egress_per_gb')
TEXT_FIELDS = ('name', 'currency', 'source', 'as_of')

PRICES = {
    's3_standard': {
        'name': 'AWS S3 Standard (us-east-1, first 50 TB)', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://aws.amazon.com/s3/pricing/',
        'storage_per_gb_month': 0.023, 'gb_bytes': GIB, 'put_per_1000': 0.005, 'egress_per_gb': 0.09,
    },
    's3_glacier': {
        'name': 'AWS S3 Glacier Flexible Retrieval (us-east-1)', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://aws.amazon.com/s3/pricing/',
        'storage_per_gb_month': 0.0036, 'gb_bytes': GIB, 'min_storage_days': 90, 'put_per_1000': 0.03,
        'retrieval_per_gb': 0.01, 'egress_per_gb': 0.09,
    },
    's3_deep_archive': {
        'name': 'AWS S3 Glacier Deep Archive (us-east-1)', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://aws.amazon.com/s3/pricing/',
        'storage_per_gb_month': 0.00099, 'gb_bytes': GIB, 'min_storage_days': 180, 'put_per_1000': 0.05,
        'retrieval_per_gb': 0.02, 'egress_per_gb': 0.09,
    },
    'b2': {
        'name': 'Backblaze B2', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://www.backblaze.com/cloud-storage/pricing',
        'storage_per_gb_month': 0.006, 'gb_bytes': GB, 'free_bytes': 10 * GB,
    },
    'wasabi': {
        'name': 'Wasabi pay-as-you-go', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://wasabi.com/pricing',
        'storage_per_gb_month': 0.00699, 'gb_bytes': GB, 'min_storage_days': 90, 'min_billed_bytes': TB,
    },
    'hetzner_bx11': {
        'name': 'Hetzner Storage Box BX11 (1 TB)', 'currency': 'EUR', 'as_of': '2025-01',
        'source': 'https://www.hetzner.com/storage/storage-box',
        'flat_per_month': 3.81, 'capacity_bytes': TB,
    },
    'gcs_standard': {
        'name': 'Google Cloud Storage Standard (us-east1)', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://cloud.google.com/storage/pricing',
        'storage_per_gb_month': 0.020, 'gb_bytes': GIB, 'put_per_1000': 0.005, 'egress_per_gb': 0.12,
    },
    'gcs_nearline': {
        'name': 'Google Cloud Storage Nearline (us-east1)', 'currency': 'USD', 'as_of': '2025-01',
        'source': 'https://cloud.google.com/storage/pricing',
        'storage_per_gb_month': 0.010, 'gb_bytes': GIB, 'min_storage_days': 30, 'put_per_1000': 0.01,
        'retrieval_per_gb': 0.01, 'egress_per_gb': 0.12,
    },
}
