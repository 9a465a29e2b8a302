"""After `make setup` (infra/local/install-blas.sh), MLlib runs on native OpenBLAS, not Java kernels."""

from spark_jobs.session import NATIVE_BLAS, linear_algebra, log_linear_algebra


def test_mllib_loads_the_native_blas_and_lapack(spark, caplog):
    assert linear_algebra(spark) == {
        "blas": "dev.ludovic.netlib.blas.JNIBLAS",
        "lapack": "dev.ludovic.netlib.lapack.JNILAPACK",
    }
    with caplog.at_level("INFO", logger="spark_jobs.session"):
        assert log_linear_algebra(spark) == NATIVE_BLAS
    assert [r.getMessage() for r in caplog.records] == [
        "MLlib linear algebra: native dev.ludovic.netlib.blas.JNIBLAS, dev.ludovic.netlib.lapack.JNILAPACK"
    ]
