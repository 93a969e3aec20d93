/*
 * plan.c: the memory of a run of any model through Morsel's C API.
 *
 *   plan MODEL.morsel SIZE... [--budget BYTES]
 *
 * Every input is filled with zeros; the k-th symbolic dim of each input
 * (such as a batch N or a sequence length S) takes the k-th SIZE, so
 * `plan minilm.morsel 32 128` feeds [32, 128] token ids. Prints the planned
 * activation memory, runs once (outputs sized from the first call's
 * BUFFER_TOO_SMALL answer, then written straight into these buffers) and
 * prints what the run holds by owner (morsel_session_memory). With
 * --budget the session gets that limit: a budget below the plan is
 * refused before anything is allocated, with the amount it needs.
 *
 * Build: see examples/c/Makefile (`make -C examples/c plan`).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "morsel.h"

#define MAX_RANK 8
#define MAX_IO 16

static int fail(const char *what, MorselStatus status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, morsel_status_name(status), morsel_last_error());
    return 1;
}

static size_t dtype_size(int32_t dtype) {
    switch (dtype) {
    case MORSEL_DTYPE_F32: case MORSEL_DTYPE_I32: return 4;
    case MORSEL_DTYPE_F16: case MORSEL_DTYPE_BF16: return 2;
    case MORSEL_DTYPE_I64: return 8;
    default: return 1;
    }
}

int main(int argc, char **argv) {
    size_t budget = 0, nsizes = 0;
    int64_t sizes[MAX_RANK];
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc) budget = (size_t)strtoull(argv[++i], NULL, 10);
        else if (!path) path = argv[i];
        else if (nsizes < MAX_RANK) sizes[nsizes++] = strtoll(argv[i], NULL, 10);
    }
    if (!path) {
        fprintf(stderr, "usage: %s MODEL.morsel SIZE... [--budget BYTES]\n", argv[0]);
        return 2;
    }
    MorselModel *model = NULL;
    MorselStatus st = morsel_model_open(path, &model);
    if (st != MORSEL_STATUS_OK) return fail("morsel_model_open", st);

    size_t n_in = 0, n_out = 0;
    morsel_model_input_count(model, &n_in);
    morsel_model_output_count(model, &n_out);
    if (n_in > MAX_IO || n_out > MAX_IO) {
        fprintf(stderr, "this example handles up to %d inputs and outputs\n", MAX_IO);
        return 1;
    }
    MorselInput inputs[MAX_IO];
    int64_t in_dims[MAX_IO][MAX_RANK];
    for (size_t i = 0; i < n_in; i++) {
        size_t rank = 0, sym = 0, count = 1;
        int32_t dtype = 0;
        const char *name = NULL;
        morsel_model_input_name(model, i, &name);
        morsel_model_input_dtype(model, i, &dtype);
        st = morsel_model_input_dims(model, i, in_dims[i], MAX_RANK);
        if (st != MORSEL_STATUS_OK) return fail("morsel_model_input_dims", st);
        morsel_model_input_rank(model, i, &rank);
        printf("input %s [", name);
        for (size_t d = 0; d < rank; d++) {
            if (in_dims[i][d] < 0) {
                if (sym >= nsizes) {
                    fprintf(stderr, "input %s has more symbolic dims than sizes given\n", name);
                    return 2;
                }
                in_dims[i][d] = sizes[sym++];
            }
            printf("%s%lld", d ? ", " : "", (long long)in_dims[i][d]);
            count *= (size_t)in_dims[i][d];
        }
        printf("]\n");
        size_t len = count * dtype_size(dtype);
        inputs[i] = (MorselInput){
            .name = name, .dtype = dtype, .dims = in_dims[i], .rank = rank,
            .data = calloc(len ? len : 1, 1), .data_len = len,
        };
    }

    MorselSession *session = NULL;
    st = morsel_session_new(model, 1, budget, &session);
    if (st != MORSEL_STATUS_OK) return fail("morsel_session_new", st);
    size_t planned = 0;
    st = morsel_session_planned_bytes(session, inputs, n_in, &planned);
    printf("planned activation memory: %zu bytes", planned);
    if (budget) printf(" (budget %zu bytes)", budget);
    printf("\n");

    /* First call with empty buffers: it writes each output's size. */
    MorselOutput outputs[MAX_IO];
    int64_t out_dims[MAX_IO][MAX_RANK];
    for (size_t k = 0; k < n_out; k++)
        outputs[k] = (MorselOutput){.dims = out_dims[k], .dims_capacity = MAX_RANK};
    st = morsel_session_run(session, inputs, n_in, outputs, n_out);
    if (st == MORSEL_STATUS_BUFFER_TOO_SMALL) {
        for (size_t k = 0; k < n_out; k++) {
            outputs[k].capacity = outputs[k].data_len;
            outputs[k].data = malloc(outputs[k].data_len ? outputs[k].data_len : 1);
        }
        st = morsel_session_run(session, inputs, n_in, outputs, n_out);
    }
    int rc = 0;
    if (st != MORSEL_STATUS_OK) {
        rc = fail("morsel_session_run", st);
    } else {
        size_t out_bytes = 0;
        for (size_t k = 0; k < n_out; k++) out_bytes += outputs[k].data_len;
        MorselMemory mem;
        morsel_session_memory(session, &mem);
        printf("held after the run: activations %zu, session scratch %zu, kernel scratch %zu, "
               "packed weights %zu, outputs (caller's buffers) %zu bytes\n",
               mem.activations, mem.session_scratch, mem.kernel_scratch, mem.prepared_weights,
               out_bytes);
    }
    morsel_session_free(session);
    for (size_t k = 0; k < n_out; k++) free(outputs[k].data);
    for (size_t i = 0; i < n_in; i++) free((void *)inputs[i].data);
    morsel_model_free(model);
    return rc;
}
