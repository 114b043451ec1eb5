"""The fleet model: products, device groups, assignment, TUF targets and update pointers."""
